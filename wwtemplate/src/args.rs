//! Argument checks and conversions shared by the template functions, with
//! Go's error wording (`wrong number of args`, `wrong type for value`, ...).

use std::sync::Arc;

use gotmpl::{TemplateError, Value};

pub(crate) type FnResult = gotmpl::Result<Value>;

/// An execution error with `msg` as its text.
pub(crate) fn err(msg: impl Into<String>) -> TemplateError {
    TemplateError::Exec(msg.into())
}

/// Go's error for a function that returned an error.
pub(crate) fn call_err(name: &str, msg: impl std::fmt::Display) -> TemplateError {
    err(format!("error calling {name}: {msg}"))
}

/// Exactly `want` arguments.
pub(crate) fn arity(name: &str, args: &[Value], want: usize) -> gotmpl::Result<()> {
    if args.len() == want {
        Ok(())
    } else {
        Err(err(format!(
            "wrong number of args for {name}: want {want} got {}",
            args.len()
        )))
    }
}

/// At least `want` arguments (variadic functions).
pub(crate) fn min_arity(name: &str, args: &[Value], want: usize) -> gotmpl::Result<()> {
    if args.len() >= want {
        Ok(())
    } else {
        Err(err(format!(
            "wrong number of args for {name}: want at least {want} got {}",
            args.len()
        )))
    }
}

/// Go's name of a value's type, for error messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Nil => "<nil>",
        Value::List(_) => "[]interface {}",
        Value::Map(_) => "map[string]interface {}",
        other => other.type_name(),
    }
}

/// A `string` parameter: strings only, like Go's typed parameters.
pub(crate) fn string_arg<'a>(name: &str, args: &'a [Value], i: usize) -> gotmpl::Result<&'a str> {
    match args.get(i) {
        Some(Value::String(s)) => Ok(s),
        Some(Value::Nil) => Err(err(format!(
            "invalid value; expected string for {name} argument {}",
            i + 1
        ))),
        Some(other) => Err(err(format!(
            "wrong type for value; expected string; got {}",
            type_name(other)
        ))),
        None => Err(err(format!("missing argument {} for {name}", i + 1))),
    }
}

/// An `int` parameter.
pub(crate) fn int_arg(name: &str, args: &[Value], i: usize) -> gotmpl::Result<i64> {
    match args.get(i) {
        Some(Value::Int(n)) => Ok(*n),
        Some(Value::Uint(n)) => i64::try_from(*n).map_err(|_| err(format!("{n} overflows int"))),
        Some(Value::Nil) => Err(err(format!(
            "invalid value; expected int for {name} argument {}",
            i + 1
        ))),
        Some(other) => Err(err(format!(
            "wrong type for value; expected int; got {}",
            type_name(other)
        ))),
        None => Err(err(format!("missing argument {} for {name}", i + 1))),
    }
}

/// A `bool` parameter.
pub(crate) fn bool_arg(name: &str, args: &[Value], i: usize) -> gotmpl::Result<bool> {
    match args.get(i) {
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::Nil) => Err(err(format!(
            "invalid value; expected bool for {name} argument {}",
            i + 1
        ))),
        Some(other) => Err(err(format!(
            "wrong type for value; expected bool; got {}",
            type_name(other)
        ))),
        None => Err(err(format!("missing argument {} for {name}", i + 1))),
    }
}

/// A string value.
pub(crate) fn string(s: impl AsRef<str>) -> Value {
    Value::String(Arc::from(s.as_ref()))
}

/// A list value.
pub(crate) fn list(items: Vec<Value>) -> Value {
    Value::List(items.into())
}

/// Go's `fmt.Sprint(v)` for one value (Sprig's `strval`).
pub(crate) fn strval(v: &Value) -> String {
    match v {
        Value::String(s) => s.to_string(),
        Value::Float(f) => go_float_v(*f),
        Value::List(items) => {
            let parts: Vec<String> = items.iter().map(strval).collect();
            format!("[{}]", parts.join(" "))
        }
        Value::Map(m) => {
            let parts: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k}:{}", strval(v)))
                .collect();
            format!("map[{}]", parts.join(" "))
        }
        other => other.to_string(),
    }
}

/// Go's `%v` of a float64 (`strconv.FormatFloat(f, 'g', -1, 64)`).
pub(crate) fn go_float_v(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    // Shortest %g switches to %e when the decimal exponent is < -4 or >= 6
    // (`fmt.Sprint(1e6)` is "1e+06"). Rust's shortest `{:e}` yields the
    // exponent exactly, avoiding log10 rounding at powers of ten.
    let sci = format!("{f:e}");
    let exp: i32 = sci
        .split_once('e')
        .and_then(|(_, e)| e.parse().ok())
        .unwrap_or(0);
    if !(-4..6).contains(&exp) {
        go_exp(f)
    } else {
        format!("{f}")
    }
}

/// Rust's `{:e}` rewritten with Go's exponent spelling (`1e+21`, `1.5e-07`).
pub(crate) fn go_exp(f: f64) -> String {
    let s = format!("{f:e}");
    match s.split_once('e') {
        Some((mant, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mant}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

/// Sprig's `toInt64` (spf13/cast): numbers convert, strings parse with Go's
/// base prefixes (0 on failure), bools are 0/1, nil is 0.
pub(crate) fn to_i64(v: &Value) -> i64 {
    match v {
        Value::Int(n) => *n,
        Value::Uint(n) => *n as i64,
        Value::Float(f) => *f as i64,
        Value::Bool(b) => i64::from(*b),
        Value::String(s) => parse_go_int(s).unwrap_or(0),
        _ => 0,
    }
}

/// `strconv.ParseInt(s, 0, 64)` after cast's trimming of a `.0…` suffix.
pub(crate) fn parse_go_int(s: &str) -> Option<i64> {
    let t = s.trim_end_matches('0');
    let s = match t.strip_suffix('.') {
        Some(head) if t.len() < s.len() => head,
        _ => s,
    };
    parse_prefixed(s)
}

fn parse_prefixed(s: &str) -> Option<i64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let body = body.replace('_', "");
    let (radix, digits) = if let Some(d) = body.strip_prefix("0x").or(body.strip_prefix("0X")) {
        (16, d.to_string())
    } else if let Some(d) = body.strip_prefix("0o").or(body.strip_prefix("0O")) {
        (8, d.to_string())
    } else if let Some(d) = body.strip_prefix("0b").or(body.strip_prefix("0B")) {
        (2, d.to_string())
    } else if body.len() > 1 && body.starts_with('0') {
        (8, body[1..].to_string())
    } else {
        (10, body.clone())
    };
    if digits.is_empty() {
        return None;
    }
    let n = i64::from_str_radix(&digits, radix).ok()?;
    Some(if neg { -n } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_go() {
        for (f, want) in [
            (1.5, "1.5"),
            (100000.0, "100000"),
            (1e6, "1e+06"),
            (123456789.0, "1.23456789e+08"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5e-7, "-2.5e-07"),
            (0.0, "0"),
        ] {
            assert_eq!(go_float_v(f), want, "{f}");
        }
    }

    #[test]
    fn ints_parse_like_cast() {
        assert_eq!(parse_go_int("10"), Some(10));
        assert_eq!(parse_go_int("0x1F"), Some(31));
        assert_eq!(parse_go_int("010"), Some(8));
        assert_eq!(parse_go_int("5.00"), Some(5));
        assert_eq!(parse_go_int("5.5"), None);
        assert_eq!(parse_go_int("-7"), Some(-7));
    }
}
