//! The data model handed to templates: [`Value`] and the [`Object`] builder.
//!
//! Go templates reach into Go structs with reflection: `.Id` may be a field or
//! a niladic method, and both are invoked the same way. Rust has no such
//! reflection and the engine (`gotmpl`) resolves `.Name` only as a map lookup,
//! so an object is a string-keyed map whose entries are either plain fields
//! or the *precomputed results* of Go's niladic methods (`Id`, `Primary`,
//! `FileSystemList`, `BoolDefaultTrue`, ...). [`Object::method`] documents that
//! intent at the call site; the closure runs once, when the object is built.
//! Methods taking arguments cannot be expressed as `.Name arg`; expose them as
//! [`Value::function`] and invoke them with the `call` builtin instead.
//!
//! Map iteration (`range`, printing) is in sorted key order, as in Go.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Field and map key names seen by this thread, shared instead of allocated
/// anew: a site's data repeats the same few dozen names for every node.
/// Bounded so unusual data (e.g. many distinct tag keys) cannot grow it.
fn key(name: &str) -> Arc<str> {
    const MAX_KEYS: usize = 4096;
    thread_local! {
        static KEYS: RefCell<HashMap<Box<str>, Arc<str>>> = RefCell::new(HashMap::new());
    }
    KEYS.with(|keys| {
        let mut keys = keys.borrow_mut();
        if let Some(k) = keys.get(name) {
            return Arc::clone(k);
        }
        let k: Arc<str> = Arc::from(name);
        if keys.len() < MAX_KEYS {
            keys.insert(name.into(), Arc::clone(&k));
        }
        k
    })
}

/// A template value: nil, bool, integer, float, string, list, map or function.
///
/// Cheap to clone (strings, lists and maps are reference counted), `Send` and
/// `Sync`, so one data tree can be shared by many concurrent renders.
#[derive(Clone, Debug, PartialEq)]
pub struct Value(pub(crate) gotmpl::Value);

/// Signature of a function value callable from a template with `call`.
pub type FunctionValue = dyn Fn(&[Value]) -> Result<Value, String> + Send + Sync;

impl Default for Value {
    fn default() -> Self {
        Value::nil()
    }
}

impl Value {
    /// Go's untyped `nil`; printed as `<no value>` by an action.
    pub fn nil() -> Self {
        Value(gotmpl::Value::Nil)
    }

    /// A list from anything convertible to values.
    pub fn list<T: Into<Value>>(items: impl IntoIterator<Item = T>) -> Self {
        let items: Vec<gotmpl::Value> = items.into_iter().map(|v| v.into().0).collect();
        Value(gotmpl::Value::List(items.into()))
    }

    /// A string-keyed map (Go `map[string]T`); keys iterate sorted.
    pub fn map<K: AsRef<str>, T: Into<Value>>(entries: impl IntoIterator<Item = (K, T)>) -> Self {
        let map: BTreeMap<Arc<str>, gotmpl::Value> = entries
            .into_iter()
            .map(|(k, v)| (key(k.as_ref()), v.into().0))
            .collect();
        Value(gotmpl::Value::Map(Arc::new(map)))
    }

    /// Starts an object (a Go struct stand-in) with fields and precomputed methods.
    pub fn object() -> Object {
        Object::default()
    }

    /// A function value, invoked in templates as `call .Fn arg...`.
    ///
    /// An `Err` from the closure fails the render with that message.
    pub fn function(f: impl Fn(&[Value]) -> Result<Value, String> + Send + Sync + 'static) -> Self {
        let f: Arc<FunctionValue> = Arc::new(f);
        Value(gotmpl::Value::Function(Arc::new(
            move |args: &[gotmpl::Value]| {
                let args: Vec<Value> = args.iter().cloned().map(Value).collect();
                f(&args).map(|v| v.0).map_err(gotmpl::TemplateError::Exec)
            },
        )))
    }

    /// Warewulf's `WWbool` (a string-backed tri-state) as an object with the
    /// `Bool` and `BoolDefaultTrue` methods precomputed from `raw`.
    ///
    /// `raw` is the stored spelling (`""`, `"true"`, `"no"`, `"UNDEF"`, ...);
    /// unset verbs are false for both methods, like Warewulf.
    pub fn wwbool(raw: &str) -> Self {
        let (plain, default_true) = wwbool_methods(raw);
        Value::object()
            .field("Bool", plain)
            .field("BoolDefaultTrue", default_true)
            .build()
    }

    /// True if this is `nil`.
    pub fn is_nil(&self) -> bool {
        matches!(self.0, gotmpl::Value::Nil)
    }

    /// The string, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        self.0.as_str()
    }

    /// The integer, if this is a signed integer.
    pub fn as_i64(&self) -> Option<i64> {
        match self.0 {
            gotmpl::Value::Int(n) => Some(n),
            _ => None,
        }
    }

    /// The boolean, if this is a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match self.0 {
            gotmpl::Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// A field of a map or object (`None` for a missing key or a non-map).
    pub fn get(&self, key: &str) -> Option<Value> {
        self.0.field(key).cloned().map(Value)
    }

    /// Go's truth: false, 0, nil and empty strings/lists/maps are false.
    pub fn is_truthy(&self) -> bool {
        self.0.is_truthy()
    }

    /// The entries of a map or object in key order (`None` for other values).
    pub fn entries(&self) -> Option<Vec<(Arc<str>, Value)>> {
        match &self.0 {
            gotmpl::Value::Map(m) => Some(
                m.iter()
                    .map(|(k, v)| (Arc::clone(k), Value(v.clone())))
                    .collect(),
            ),
            _ => None,
        }
    }

    /// Appends an unambiguous encoding of the value to `out` (type tags,
    /// lengths, maps in key order): equal encodings mean equal values.
    /// Functions encode as a marker only.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        encode(&self.0, out);
    }
}

fn encode(v: &gotmpl::Value, out: &mut Vec<u8>) {
    fn bytes(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u64).to_le_bytes());
        out.extend_from_slice(b);
    }
    match v {
        gotmpl::Value::Nil => out.push(b'n'),
        gotmpl::Value::Bool(b) => out.extend_from_slice(if *b { b"T" } else { b"F" }),
        gotmpl::Value::Int(i) => {
            out.push(b'i');
            out.extend_from_slice(&i.to_le_bytes());
        }
        gotmpl::Value::Uint(u) => {
            out.push(b'u');
            out.extend_from_slice(&u.to_le_bytes());
        }
        gotmpl::Value::Float(f) => {
            out.push(b'f');
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        gotmpl::Value::String(s) => {
            out.push(b's');
            bytes(out, s.as_bytes());
        }
        gotmpl::Value::List(items) => {
            out.push(b'l');
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for i in items.iter() {
                encode(i, out);
            }
        }
        gotmpl::Value::Map(m) => {
            out.push(b'm');
            out.extend_from_slice(&(m.len() as u64).to_le_bytes());
            for (k, v) in m.iter() {
                bytes(out, k.as_bytes());
                encode(v, out);
            }
        }
        gotmpl::Value::Function(_) => out.push(b'x'),
    }
}

/// Warewulf's unset verbs: a field holding one of them counts as unset.
const UNSET_VERBS: [&str; 6] = ["unset", "delete", "undef", "--", "nil", "0.0.0.0"];

/// `(Bool(), BoolDefaultTrue())` of a Warewulf `WWbool` holding `raw`.
fn wwbool_methods(raw: &str) -> (bool, bool) {
    let lower = raw.to_lowercase();
    if UNSET_VERBS.contains(&lower.as_str()) {
        return (false, false);
    }
    match lower.as_str() {
        "yes" => (true, true),
        "" => (false, true),
        "no" => (false, false),
        "1" | "t" | "true" => (true, true),
        "0" | "f" | "false" => (false, false),
        _ => (false, true),
    }
}

/// Builder for an object: a map of fields and precomputed niladic methods.
#[derive(Default, Debug, Clone)]
pub struct Object {
    /// In insertion order; sorted once by [`Object::build`] (a later entry
    /// with the same name wins), which is cheaper than a tree insert per field.
    entries: Vec<(Arc<str>, gotmpl::Value)>,
}

impl Object {
    /// Adds a field; a later entry with the same name replaces an earlier one.
    #[must_use]
    pub fn field(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.entries.push((key(name), value.into().0));
        self
    }

    /// Adds a Go niladic method: `f` runs now and `.name` yields its result.
    #[must_use]
    pub fn method(self, name: &str, f: impl FnOnce() -> Value) -> Self {
        let value = f();
        self.field(name, value)
    }

    /// Adds a field only when `value` is `Some`, leaving it missing otherwise.
    #[must_use]
    pub fn field_opt(self, name: &str, value: Option<impl Into<Value>>) -> Self {
        match value {
            Some(v) => self.field(name, v),
            None => self,
        }
    }

    /// Sorts the fields by name, keeping the last of equal names. An object
    /// that is cloned and extended many times (one per node and template)
    /// should be compacted first: sorting a sorted prefix is linear.
    #[must_use]
    pub fn compact(mut self) -> Self {
        // Stable, so equal names stay in insertion order; keep the last.
        self.entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(Arc<str>, gotmpl::Value)> = Vec::with_capacity(self.entries.len());
        for e in self.entries {
            match out.last_mut() {
                Some(last) if last.0 == e.0 => *last = e,
                _ => out.push(e),
            }
        }
        self.entries = out;
        self
    }

    /// Finishes the object.
    pub fn build(self) -> Value {
        let map: BTreeMap<Arc<str>, gotmpl::Value> = self.compact().entries.into_iter().collect();
        Value(gotmpl::Value::Map(Arc::new(map)))
    }
}

impl From<Object> for Value {
    fn from(o: Object) -> Self {
        o.build()
    }
}

impl From<serde_json::Value> for Value {
    fn from(v: serde_json::Value) -> Self {
        use serde_json::Value as J;
        match v {
            J::Null => Value::nil(),
            J::Bool(b) => b.into(),
            J::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value(gotmpl::Value::Int(i))
                } else if let Some(u) = n.as_u64() {
                    Value(gotmpl::Value::Uint(u))
                } else {
                    Value(gotmpl::Value::Float(n.as_f64().unwrap_or(f64::NAN)))
                }
            }
            J::String(s) => s.into(),
            J::Array(items) => Value::list(items),
            J::Object(map) => Value::map(map),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value(gotmpl::Value::String(Arc::from(s)))
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value(gotmpl::Value::String(Arc::from(s)))
    }
}

impl From<&String> for Value {
    fn from(s: &String) -> Self {
        Value::from(s.as_str())
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value(gotmpl::Value::Bool(b))
    }
}

macro_rules! from_signed {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(n: $t) -> Self {
                Value(gotmpl::Value::Int(i64::from(n)))
            }
        }
    )*};
}
from_signed!(i8, i16, i32, i64);

impl From<u8> for Value {
    fn from(n: u8) -> Self {
        Value(gotmpl::Value::Int(i64::from(n)))
    }
}

impl From<u16> for Value {
    fn from(n: u16) -> Self {
        Value(gotmpl::Value::Int(i64::from(n)))
    }
}

impl From<u32> for Value {
    fn from(n: u32) -> Self {
        Value(gotmpl::Value::Int(i64::from(n)))
    }
}

/// Values up to `i64::MAX` become Go `int`s, larger ones `uint`s.
impl From<u64> for Value {
    fn from(n: u64) -> Self {
        match i64::try_from(n) {
            Ok(i) => Value(gotmpl::Value::Int(i)),
            Err(_) => Value(gotmpl::Value::Uint(n)),
        }
    }
}

impl From<usize> for Value {
    fn from(n: usize) -> Self {
        Value::from(n as u64)
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value(gotmpl::Value::Float(f))
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or_else(Value::nil, Into::into)
    }
}

impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(v: Vec<T>) -> Self {
        Value::list(v)
    }
}

impl<T: Into<Value>> From<BTreeMap<String, T>> for Value {
    fn from(m: BTreeMap<String, T>) -> Self {
        Value::map(m)
    }
}

impl<T: Into<Value>> From<HashMap<String, T>> for Value {
    fn from(m: HashMap<String, T>) -> Self {
        Value::map(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_converts_recursively() {
        let v = Value::from(serde_json::json!({"a": [1, "x", null, true, 1.5]}));
        let list = v.get("a").expect("key a exists");
        assert!(matches!(list.0, gotmpl::Value::List(ref l) if l.len() == 5));
    }

    #[test]
    fn later_fields_replace_earlier_ones() {
        let base = Value::object()
            .field("b", "1")
            .field("a", "x")
            .field("b", "2")
            .compact();
        let v = base.clone().field("a", "y").field("c", "3").build();
        let text = |k: &str| v.get(k).map(|v| format!("{:?}", v.0));
        assert_eq!(text("a"), Some(format!("{:?}", gotmpl::Value::from("y"))));
        assert_eq!(text("b"), Some(format!("{:?}", gotmpl::Value::from("2"))));
        assert_eq!(text("c"), Some(format!("{:?}", gotmpl::Value::from("3"))));
        let first = base.build();
        assert_eq!(
            first.get("a").map(|v| format!("{:?}", v.0)),
            Some(format!("{:?}", gotmpl::Value::from("x")))
        );
    }

    #[test]
    fn wwbool_follows_warewulf() {
        assert_eq!(wwbool_methods(""), (false, true));
        assert_eq!(wwbool_methods("yes"), (true, true));
        assert_eq!(wwbool_methods("False"), (false, false));
        assert_eq!(wwbool_methods("UNDEF"), (false, false));
        assert_eq!(wwbool_methods("garbage"), (false, true));
    }
}
