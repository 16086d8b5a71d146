//! The Sprig functions Warewulf templates use, with Sprig's argument order
//! (`default DEFAULT VALUE`, `join SEP LIST`, `substr START END STR`, ...).
//!
//! Semantics follow Sprig v3 as merged into Warewulf's function map: string
//! functions take Go `string` parameters (a non-string is an error), list
//! functions accept any list, arithmetic goes through Sprig's `toInt64`.
//! Values are immutable, so `set` and `unset` return an updated copy; the
//! in-place effect templates rely on is restored by a rewrite (see
//! `compat`). `keys` is sorted (Go's map order is random, so any order is a
//! valid Go result).

use std::collections::BTreeMap;
use std::sync::Arc;

use gotmpl::Value;
use regex::Regex;

use crate::args::{
    FnResult, arity, bool_arg, call_err, err, go_exp, int_arg, list, min_arity, string, string_arg,
    strval, to_i64, type_name,
};
use crate::warewulf::{go_replace_all, go_split};

/// Names of the functions defined here (for the parse-time function check).
pub(crate) const NAMES: &[&str] = &[
    "default",
    "empty",
    "coalesce",
    "ternary",
    "list",
    "append",
    "push",
    "join",
    "set",
    "unset",
    "dict",
    "hasKey",
    "keys",
    "lower",
    "upper",
    "splitList",
    "split",
    "regexMatch",
    "regexSplit",
    "regexReplaceAll",
    "regexReplaceAllLiteral",
    "regexFind",
    "regexFindAll",
    "substr",
    "trim",
    "trimAll",
    "trimSuffix",
    "trimPrefix",
    "replace",
    "contains",
    "hasPrefix",
    "hasSuffix",
    "without",
    "toJson",
    "quote",
    "squote",
    "indent",
    "nindent",
    "first",
    "last",
    "uniq",
    "has",
    "cat",
    "add",
    "add1",
    "sub",
    "mul",
    "div",
    "mod",
    "toString",
    "atoi",
    "int",
    "int64",
    "sortAlpha",
    "repeat",
    "nospace",
    "title",
];

/// Adds the Sprig subset to `t`.
pub(crate) fn register(t: gotmpl::Template) -> gotmpl::Template {
    let t = t
        .func("default", |a| {
            min_arity("default", a, 1)?;
            Ok(match a.get(1) {
                Some(given) if !is_empty(given) => given.clone(),
                _ => a[0].clone(),
            })
        })
        .func("empty", |a| {
            arity("empty", a, 1)?;
            Ok(Value::Bool(is_empty(&a[0])))
        })
        .func("coalesce", |a| {
            Ok(a.iter()
                .find(|v| !is_empty(v))
                .cloned()
                .unwrap_or(Value::Nil))
        })
        .func("ternary", |a| {
            arity("ternary", a, 3)?;
            let cond = bool_arg("ternary", a, 2)?;
            Ok(if cond { a[0].clone() } else { a[1].clone() })
        })
        .func("list", |a| Ok(list(a.to_vec())))
        .func("append", |a| push("append", a))
        .func("push", |a| push("push", a))
        .func("join", |a| {
            arity("join", a, 2)?;
            let sep = string_arg("join", a, 0)?;
            Ok(string(strslice(&a[1]).join(sep)))
        })
        .func("set", |a| {
            arity("set", a, 3)?;
            let mut m = dict_arg("set", a, 0)?;
            m.insert(Arc::from(string_arg("set", a, 1)?), a[2].clone());
            Ok(Value::Map(Arc::new(m)))
        })
        .func("unset", |a| {
            arity("unset", a, 2)?;
            let mut m = dict_arg("unset", a, 0)?;
            m.remove(string_arg("unset", a, 1)?);
            Ok(Value::Map(Arc::new(m)))
        })
        .func("dict", |a| {
            let mut m = BTreeMap::new();
            for pair in a.chunks(2) {
                let value = pair.get(1).cloned().unwrap_or_else(|| string(""));
                m.insert(Arc::from(strval(&pair[0]).as_str()), value);
            }
            Ok(Value::Map(Arc::new(m)))
        })
        .func("hasKey", |a| {
            arity("hasKey", a, 2)?;
            let m = dict_arg("hasKey", a, 0)?;
            Ok(Value::Bool(m.contains_key(string_arg("hasKey", a, 1)?)))
        })
        .func("keys", |a| {
            let mut keys: Vec<String> = Vec::new();
            for i in 0..a.len() {
                keys.extend(dict_arg("keys", a, i)?.keys().map(|k| k.to_string()));
            }
            keys.sort();
            Ok(list(keys.into_iter().map(string).collect()))
        })
        .func("lower", |a| str1("lower", a, str::to_lowercase))
        .func("upper", |a| str1("upper", a, str::to_uppercase))
        .func("trim", |a| str1("trim", a, |s| s.trim().to_string()))
        .func("nospace", |a| {
            str1("nospace", a, |s| {
                s.chars().filter(|c| !c.is_whitespace()).collect()
            })
        })
        .func("title", |a| str1("title", a, title))
        .func("trimAll", |a| {
            str2("trimAll", a, |cut, s| {
                s.trim_matches(|c| cut.contains(c)).to_string()
            })
        })
        .func("trimSuffix", |a| {
            str2("trimSuffix", a, |suf, s| {
                s.strip_suffix(suf).unwrap_or(s).to_string()
            })
        })
        .func("trimPrefix", |a| {
            str2("trimPrefix", a, |pre, s| {
                s.strip_prefix(pre).unwrap_or(s).to_string()
            })
        })
        .func("replace", |a| {
            arity("replace", a, 3)?;
            let old = string_arg("replace", a, 0)?;
            let new = string_arg("replace", a, 1)?;
            let src = string_arg("replace", a, 2)?;
            Ok(string(go_replace_all(src, old, new)))
        })
        .func("contains", |a| {
            bool2("contains", a, |sub, s| s.contains(sub))
        })
        .func("hasPrefix", |a| {
            bool2("hasPrefix", a, |p, s| s.starts_with(p))
        })
        .func("hasSuffix", |a| {
            bool2("hasSuffix", a, |p, s| s.ends_with(p))
        })
        .func("repeat", |a| {
            arity("repeat", a, 2)?;
            let n = int_arg("repeat", a, 0)?;
            let s = string_arg("repeat", a, 1)?;
            let n = usize::try_from(n)
                .map_err(|_| call_err("repeat", "strings: negative Repeat count"))?;
            Ok(string(s.repeat(n)))
        });
    register_lists(register_regex(register_math(t)))
}

fn register_lists(t: gotmpl::Template) -> gotmpl::Template {
    t.func("splitList", |a| {
        arity("splitList", a, 2)?;
        let sep = string_arg("splitList", a, 0)?;
        let s = string_arg("splitList", a, 1)?;
        Ok(list(go_split(s, sep).into_iter().map(string).collect()))
    })
    .func("split", |a| {
        arity("split", a, 2)?;
        let sep = string_arg("split", a, 0)?;
        let s = string_arg("split", a, 1)?;
        let m: BTreeMap<Arc<str>, Value> = go_split(s, sep)
            .into_iter()
            .enumerate()
            .map(|(i, part)| (Arc::from(format!("_{i}").as_str()), string(part)))
            .collect();
        Ok(Value::Map(Arc::new(m)))
    })
    .func("substr", |a| {
        arity("substr", a, 3)?;
        let start = int_arg("substr", a, 0)?;
        let end = int_arg("substr", a, 1)?;
        let s = string_arg("substr", a, 2)?;
        substr(start, end, s).map(string)
    })
    .func("without", |a| {
        min_arity("without", a, 1)?;
        let items = list_arg("without", &a[0])?;
        let omit = &a[1..];
        Ok(list(
            items
                .iter()
                .filter(|v| !omit.iter().any(|o| deep_equal(o, v)))
                .cloned()
                .collect(),
        ))
    })
    .func("first", |a| {
        arity("first", a, 1)?;
        Ok(list_arg("first", &a[0])?
            .first()
            .cloned()
            .unwrap_or(Value::Nil))
    })
    .func("last", |a| {
        arity("last", a, 1)?;
        Ok(list_arg("last", &a[0])?
            .last()
            .cloned()
            .unwrap_or(Value::Nil))
    })
    .func("uniq", |a| {
        arity("uniq", a, 1)?;
        let mut out: Vec<Value> = Vec::new();
        for v in list_arg("uniq", &a[0])?.iter() {
            if !out.iter().any(|o| deep_equal(o, v)) {
                out.push(v.clone());
            }
        }
        Ok(list(out))
    })
    .func("has", |a| {
        arity("has", a, 2)?;
        if matches!(a[1], Value::Nil) {
            return Ok(Value::Bool(false));
        }
        let hay = list_arg("has", &a[1])?;
        Ok(Value::Bool(hay.iter().any(|v| deep_equal(v, &a[0]))))
    })
    .func("sortAlpha", |a| {
        arity("sortAlpha", a, 1)?;
        let mut items = strslice(&a[0]);
        items.sort();
        Ok(list(items.into_iter().map(string).collect()))
    })
    .func("cat", |a| {
        let parts: Vec<String> = a
            .iter()
            .filter(|v| !matches!(v, Value::Nil))
            .map(strval)
            .collect();
        Ok(string(parts.join(" ")))
    })
    .func("quote", |a| {
        let parts: Vec<String> = a
            .iter()
            .filter(|v| !matches!(v, Value::Nil))
            .map(|v| go_quote(&strval(v)))
            .collect();
        Ok(string(parts.join(" ")))
    })
    .func("squote", |a| {
        let parts: Vec<String> = a
            .iter()
            .filter(|v| !matches!(v, Value::Nil))
            .map(|v| format!("'{}'", strval(v)))
            .collect();
        Ok(string(parts.join(" ")))
    })
    .func("indent", |a| {
        arity("indent", a, 2)?;
        let n = int_arg("indent", a, 0)?;
        Ok(string(indent(n, string_arg("indent", a, 1)?)))
    })
    .func("nindent", |a| {
        arity("nindent", a, 2)?;
        let n = int_arg("nindent", a, 0)?;
        Ok(string(format!(
            "\n{}",
            indent(n, string_arg("nindent", a, 1)?)
        )))
    })
    .func("toJson", |a| {
        arity("toJson", a, 1)?;
        let mut out = String::new();
        Ok(string(if to_json(&a[0], &mut out) {
            out
        } else {
            String::new()
        }))
    })
    .func("toString", |a| {
        arity("toString", a, 1)?;
        Ok(string(strval(&a[0])))
    })
}

fn register_regex(t: gotmpl::Template) -> gotmpl::Template {
    t.func("regexMatch", |a| {
        arity("regexMatch", a, 2)?;
        let re = string_arg("regexMatch", a, 0)?;
        let s = string_arg("regexMatch", a, 1)?;
        Ok(Value::Bool(cached_regex(re).is_ok_and(|r| r.is_match(s))))
    })
    .func("regexSplit", |a| {
        arity("regexSplit", a, 3)?;
        let re = compile("regexSplit", string_arg("regexSplit", a, 0)?)?;
        let s = string_arg("regexSplit", a, 1)?;
        let n = int_arg("regexSplit", a, 2)?;
        Ok(list(
            regex_split(&re, s, n).into_iter().map(string).collect(),
        ))
    })
    .func("regexReplaceAll", |a| {
        arity("regexReplaceAll", a, 3)?;
        let re = compile("regexReplaceAll", string_arg("regexReplaceAll", a, 0)?)?;
        let s = string_arg("regexReplaceAll", a, 1)?;
        let repl = string_arg("regexReplaceAll", a, 2)?;
        Ok(string(re.replace_all(s, repl)))
    })
    .func("regexReplaceAllLiteral", |a| {
        arity("regexReplaceAllLiteral", a, 3)?;
        let re = compile(
            "regexReplaceAllLiteral",
            string_arg("regexReplaceAllLiteral", a, 0)?,
        )?;
        let s = string_arg("regexReplaceAllLiteral", a, 1)?;
        let repl = string_arg("regexReplaceAllLiteral", a, 2)?;
        Ok(string(re.replace_all(s, regex::NoExpand(repl))))
    })
    .func("regexFind", |a| {
        arity("regexFind", a, 2)?;
        let re = compile("regexFind", string_arg("regexFind", a, 0)?)?;
        let s = string_arg("regexFind", a, 1)?;
        Ok(string(re.find(s).map_or("", |m| m.as_str())))
    })
    .func("regexFindAll", |a| {
        arity("regexFindAll", a, 3)?;
        let re = compile("regexFindAll", string_arg("regexFindAll", a, 0)?)?;
        let s = string_arg("regexFindAll", a, 1)?;
        let n = int_arg("regexFindAll", a, 2)?;
        let limit = usize::try_from(n).unwrap_or(usize::MAX);
        Ok(list(
            re.find_iter(s)
                .take(limit)
                .map(|m| string(m.as_str()))
                .collect(),
        ))
    })
}

fn register_math(t: gotmpl::Template) -> gotmpl::Template {
    t.func("add", |a| {
        Ok(Value::Int(
            a.iter().map(to_i64).fold(0i64, i64::wrapping_add),
        ))
    })
    .func("add1", |a| {
        arity("add1", a, 1)?;
        Ok(Value::Int(to_i64(&a[0]).wrapping_add(1)))
    })
    .func("sub", |a| {
        arity("sub", a, 2)?;
        Ok(Value::Int(to_i64(&a[0]).wrapping_sub(to_i64(&a[1]))))
    })
    .func("mul", |a| {
        min_arity("mul", a, 1)?;
        Ok(Value::Int(
            a.iter().map(to_i64).fold(1i64, i64::wrapping_mul),
        ))
    })
    .func("div", |a| {
        arity("div", a, 2)?;
        let d = to_i64(&a[1]);
        if d == 0 {
            return Err(call_err("div", "runtime error: integer divide by zero"));
        }
        Ok(Value::Int(to_i64(&a[0]).wrapping_div(d)))
    })
    .func("mod", |a| {
        arity("mod", a, 2)?;
        let d = to_i64(&a[1]);
        if d == 0 {
            return Err(call_err("mod", "runtime error: integer divide by zero"));
        }
        Ok(Value::Int(to_i64(&a[0]).wrapping_rem(d)))
    })
    .func("atoi", |a| {
        arity("atoi", a, 1)?;
        let s = string_arg("atoi", a, 0)?;
        Ok(Value::Int(go_atoi(s).unwrap_or(0)))
    })
    .func("int", |a| {
        arity("int", a, 1)?;
        Ok(Value::Int(to_i64(&a[0])))
    })
    .func("int64", |a| {
        arity("int64", a, 1)?;
        Ok(Value::Int(to_i64(&a[0])))
    })
}

/// Sprig's `empty`: Go's zero value of the dynamic type counts as empty.
pub(crate) fn is_empty(v: &Value) -> bool {
    match v {
        Value::Nil => true,
        Value::Bool(b) => !b,
        Value::Int(n) => *n == 0,
        Value::Uint(n) => *n == 0,
        Value::Float(f) => *f == 0.0,
        Value::String(s) => s.is_empty(),
        Value::List(l) => l.is_empty(),
        Value::Map(m) => m.is_empty(),
        _ => false,
    }
}

/// `reflect.DeepEqual` over template values (types must match).
fn deep_equal(a: &Value, b: &Value) -> bool {
    a == b
}

/// Sprig's `strslice`: a list's non-nil items as strings, a scalar as one
/// item, nil as none.
fn strslice(v: &Value) -> Vec<String> {
    match v {
        Value::Nil => Vec::new(),
        Value::List(items) => items
            .iter()
            .filter(|i| !matches!(i, Value::Nil))
            .map(strval)
            .collect(),
        other => vec![strval(other)],
    }
}

fn push(name: &str, a: &[Value]) -> FnResult {
    arity(name, a, 2)?;
    match &a[0] {
        Value::List(items) => {
            let mut out = items.to_vec();
            out.push(a[1].clone());
            Ok(list(out))
        }
        other => Err(call_err(
            name,
            format!("Cannot push on type {}", kind_name(other)),
        )),
    }
}

/// Go's `reflect.Kind` name, as Sprig's list errors print it.
fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Nil => "invalid",
        Value::List(_) => "slice",
        Value::Map(_) => "map",
        Value::Int(_) => "int",
        Value::Uint(_) => "uint",
        Value::Float(_) => "float64",
        Value::Bool(_) => "bool",
        Value::String(_) => "string",
        _ => "func",
    }
}

fn list_arg<'a>(name: &str, v: &'a Value) -> gotmpl::Result<&'a [Value]> {
    match v {
        Value::List(items) => Ok(items),
        other => {
            let what = name.trim_start_matches("must");
            Err(call_err(
                name,
                format!("Cannot find {what} on type {}", kind_name(other)),
            ))
        }
    }
}

fn dict_arg(name: &str, a: &[Value], i: usize) -> gotmpl::Result<BTreeMap<Arc<str>, Value>> {
    match a.get(i) {
        Some(Value::Map(m)) => Ok((**m).clone()),
        Some(other) => Err(err(format!(
            "wrong type for value; expected map[string]interface {{}}; got {}",
            type_name(other)
        ))),
        None => Err(err(format!("missing argument {} for {name}", i + 1))),
    }
}

fn str1(name: &str, a: &[Value], f: impl Fn(&str) -> String) -> FnResult {
    arity(name, a, 1)?;
    Ok(string(f(string_arg(name, a, 0)?)))
}

fn str2(name: &str, a: &[Value], f: impl Fn(&str, &str) -> String) -> FnResult {
    arity(name, a, 2)?;
    Ok(string(f(string_arg(name, a, 0)?, string_arg(name, a, 1)?)))
}

fn bool2(name: &str, a: &[Value], f: impl Fn(&str, &str) -> bool) -> FnResult {
    arity(name, a, 2)?;
    Ok(Value::Bool(f(
        string_arg(name, a, 0)?,
        string_arg(name, a, 1)?,
    )))
}

fn compile(name: &str, re: &str) -> gotmpl::Result<Regex> {
    cached_regex(re).map_err(|e| call_err(name, format!("regexp: Compile({}): {e}", go_quote(re))))
}

/// Compiled regexes kept per thread: templates use a handful of constant
/// patterns, called once per node, and compiling dominates matching.
const REGEX_CACHE_MAX: usize = 256;

thread_local! {
    static REGEX_CACHE: std::cell::RefCell<std::collections::HashMap<String, Regex>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

fn cached_regex(pattern: &str) -> Result<Regex, regex::Error> {
    REGEX_CACHE.with(|cache| {
        if let Some(re) = cache.borrow().get(pattern) {
            return Ok(re.clone());
        }
        let re = Regex::new(pattern)?;
        let mut cache = cache.borrow_mut();
        if cache.len() >= REGEX_CACHE_MAX {
            cache.clear();
        }
        cache.insert(pattern.to_string(), re.clone());
        Ok(re)
    })
}

/// Sprig's `substr`: byte offsets; a negative start means 0, a negative or
/// too large end means the end of the string. Go panics on other bad ranges.
fn substr(start: i64, end: i64, s: &str) -> gotmpl::Result<String> {
    let len = s.len() as i64;
    let (from, to) = if start < 0 {
        (0, end)
    } else if end < 0 || end > len {
        (start, len)
    } else {
        (start, end)
    };
    if from > to || to > len || from < 0 {
        return Err(call_err(
            "substr",
            format!("runtime error: slice bounds out of range [{from}:{to}] with length {len}"),
        ));
    }
    let bytes = &s.as_bytes()[from as usize..to as usize];
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// Go's `regexp.Split(s, n)`.
fn regex_split<'a>(re: &Regex, s: &'a str, n: i64) -> Vec<&'a str> {
    if n == 0 {
        return Vec::new();
    }
    if !re.as_str().is_empty() && s.is_empty() {
        return vec![""];
    }
    let limit = usize::try_from(n).unwrap_or(usize::MAX);
    let mut out = Vec::new();
    let (mut beg, mut end) = (0usize, 0usize);
    for m in re.find_iter(s).take(limit) {
        if n > 0 && out.len() as i64 == n - 1 {
            break;
        }
        end = m.start();
        if m.end() != 0 {
            out.push(&s[beg..end]);
        }
        beg = m.end();
    }
    if end != s.len() {
        out.push(&s[beg..]);
    }
    out
}

/// Sprig's `indent`.
fn indent(n: i64, s: &str) -> String {
    let pad = " ".repeat(usize::try_from(n).unwrap_or(0));
    format!("{pad}{}", s.replace('\n', &format!("\n{pad}")))
}

/// `strings.Title`-like: upper-case the first letter of each word.
fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_letter = false;
    for c in s.chars() {
        if !prev_letter {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_letter = c.is_alphanumeric() || c == '_' || c == '\'';
    }
    out
}

/// `strconv.Atoi`: optional sign and decimal digits only.
fn go_atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Go's `strconv.Quote`.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                if (c as u32) < 0x10000 {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `json.Marshal` (HTML-safe escaping, sorted map keys); false when the
/// value cannot be encoded (Sprig then prints "").
fn to_json(v: &Value, out: &mut String) -> bool {
    match v {
        Value::Nil => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(n) => out.push_str(&n.to_string()),
        Value::Uint(n) => out.push_str(&n.to_string()),
        Value::Float(f) => {
            if !f.is_finite() {
                return false;
            }
            let abs = f.abs();
            if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
                let s = go_exp(*f);
                // Go trims the exponent's leading zero: 1e-07 → 1e-7.
                out.push_str(&s.replace("e-0", "e-").replace("e+0", "e+"));
            } else {
                out.push_str(&format!("{f}"));
            }
        }
        Value::String(s) => json_string(s, out),
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if !to_json(item, out) {
                    return false;
                }
            }
            out.push(']');
        }
        Value::Map(m) => {
            out.push('{');
            for (i, (k, item)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_string(k, out);
                out.push(':');
                if !to_json(item, out) {
                    return false;
                }
            }
            out.push('}');
        }
        _ => return false,
    }
    true
}

fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substr_like_sprig() {
        assert_eq!(substr(0, 5, "route1").ok().as_deref(), Some("route"));
        assert_eq!(substr(0, 5, "abc").ok().as_deref(), Some("abc"));
        assert_eq!(substr(-1, 2, "abc").ok().as_deref(), Some("ab"));
        assert!(substr(3, 1, "abcd").is_err());
    }

    #[test]
    fn regex_split_like_go() {
        let re = Regex::new("[ ;]+").expect("valid");
        assert_eq!(regex_split(&re, "a; b c", -1), ["a", "b", "c"]);
        assert_eq!(regex_split(&re, "a; b c", 2), ["a", "b c"]);
        assert_eq!(regex_split(&re, "", -1), [""]);
    }

    #[test]
    fn quote_like_go() {
        assert_eq!(go_quote("a\"b\n\u{1}é"), "\"a\\\"b\\n\\x01é\"");
    }
}
