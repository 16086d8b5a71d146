//! Hostlist expressions: `n[001-100,105]`, `rack[1-2]-n[01-04]`, `a,b[1-3]`.
//!
//! A range keeps the width of its first bound, so `n[01-10]` gives `n01` …
//! `n10`. Several bracket groups multiply out left to right. [`collapse`] is
//! the inverse for display: it folds the last number of each name.

use std::collections::BTreeMap;

/// A hostlist expression that cannot be expanded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostlistError {
    #[error("hostlist {0:?}: unclosed '['")]
    Unclosed(String),
    #[error("hostlist {0:?}: unexpected ']'")]
    UnexpectedClose(String),
    #[error("hostlist {0:?}: nested '['")]
    Nested(String),
    #[error("hostlist {expr:?}: bad range {range:?}")]
    BadRange { expr: String, range: String },
    #[error("hostlist {expr:?}: range {range:?} runs backwards")]
    Backwards { expr: String, range: String },
    #[error("hostlist {expr:?}: expands to more than {max} names")]
    TooLarge { expr: String, max: usize },
    #[error("hostlist {0:?}: empty name")]
    Empty(String),
}

/// Upper bound on names from one expression, so a typo cannot exhaust memory.
pub const MAX_NAMES: usize = 1_000_000;

/// Expands every expression in `exprs` (each may be a comma list) in order.
pub fn expand_all<S: AsRef<str>>(exprs: &[S]) -> Result<Vec<String>, HostlistError> {
    let mut out = Vec::new();
    for e in exprs {
        out.extend(expand(e.as_ref())?);
    }
    Ok(out)
}

/// Expands one expression; commas outside brackets separate items.
pub fn expand(expr: &str) -> Result<Vec<String>, HostlistError> {
    let mut out = Vec::new();
    for item in split_top(expr)? {
        if item.is_empty() {
            if expr.trim().is_empty() {
                return Err(HostlistError::Empty(expr.to_owned()));
            }
            continue;
        }
        expand_item(expr, item, &mut out)?;
    }
    if out.is_empty() {
        return Err(HostlistError::Empty(expr.to_owned()));
    }
    Ok(out)
}

/// Splits on commas that are not inside brackets, checking bracket balance.
fn split_top(expr: &str) -> Result<Vec<&str>, HostlistError> {
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut start = 0usize;
    for (i, c) in expr.char_indices() {
        match c {
            '[' if depth > 0 => return Err(HostlistError::Nested(expr.to_owned())),
            '[' => depth = 1,
            ']' if depth == 0 => return Err(HostlistError::UnexpectedClose(expr.to_owned())),
            ']' => depth = 0,
            ',' if depth == 0 => {
                items.push(expr[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth > 0 {
        return Err(HostlistError::Unclosed(expr.to_owned()));
    }
    items.push(expr[start..].trim());
    Ok(items)
}

enum Part {
    Text(String),
    Choices(Vec<String>),
}

fn expand_item(expr: &str, item: &str, out: &mut Vec<String>) -> Result<(), HostlistError> {
    let mut parts = Vec::new();
    let mut rest = item;
    while let Some(open) = rest.find('[') {
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_owned()));
        }
        let close = rest[open..]
            .find(']')
            .map(|c| c + open)
            .ok_or_else(|| HostlistError::Unclosed(expr.to_owned()))?;
        parts.push(Part::Choices(expand_group(expr, &rest[open + 1..close])?));
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_owned()));
    }
    let mut names = vec![String::new()];
    for part in parts {
        match part {
            Part::Text(t) => names.iter_mut().for_each(|n| n.push_str(&t)),
            Part::Choices(choices) => {
                if names.len().saturating_mul(choices.len()) + out.len() > MAX_NAMES {
                    return Err(HostlistError::TooLarge {
                        expr: expr.to_owned(),
                        max: MAX_NAMES,
                    });
                }
                names = names
                    .iter()
                    .flat_map(|n| choices.iter().map(move |c| format!("{n}{c}")))
                    .collect();
            }
        }
    }
    out.extend(names);
    Ok(())
}

/// `001-003,7` → `["001", "002", "003", "7"]`.
fn expand_group(expr: &str, group: &str) -> Result<Vec<String>, HostlistError> {
    let bad = |range: &str| HostlistError::BadRange {
        expr: expr.to_owned(),
        range: range.to_owned(),
    };
    let mut out = Vec::new();
    for range in group.split(',') {
        let range = range.trim();
        let (lo, hi) = range.split_once('-').unwrap_or((range, range));
        let (lo, hi) = (lo.trim(), hi.trim());
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(lo) || !digits(hi) {
            return Err(bad(range));
        }
        let width = lo.len();
        let a: u64 = lo.parse().map_err(|_| bad(range))?;
        let b: u64 = hi.parse().map_err(|_| bad(range))?;
        if b < a {
            return Err(HostlistError::Backwards {
                expr: expr.to_owned(),
                range: range.to_owned(),
            });
        }
        if (b - a) as usize >= MAX_NAMES || out.len() + (b - a) as usize >= MAX_NAMES {
            return Err(HostlistError::TooLarge {
                expr: expr.to_owned(),
                max: MAX_NAMES,
            });
        }
        out.extend((a..=b).map(|n| format!("{n:0width$}")));
    }
    Ok(out)
}

/// Folds names into a compact hostlist: `n01,n02,n03,x` → `n[01-03],x`.
/// Only the last run of digits in each name is folded; names that share the
/// text around it and the digit count form one group.
pub fn collapse<S: AsRef<str>>(names: &[S]) -> String {
    // (prefix, suffix, width) → numbers; names without digits stand alone.
    let mut groups: BTreeMap<(String, String, usize), Vec<u64>> = BTreeMap::new();
    let mut plain: Vec<String> = Vec::new();
    for name in names {
        let name = name.as_ref();
        match split_last_number(name) {
            Some((pre, num, suf)) => match num.parse::<u64>() {
                Ok(n) => groups
                    .entry((pre.to_owned(), suf.to_owned(), num.len()))
                    .or_default()
                    .push(n),
                Err(_) => plain.push(name.to_owned()),
            },
            None => plain.push(name.to_owned()),
        }
    }
    let mut items: Vec<String> = Vec::new();
    for ((pre, suf, width), mut nums) in groups {
        nums.sort_unstable();
        nums.dedup();
        if nums.len() == 1 {
            items.push(format!("{pre}{:0width$}{suf}", nums[0]));
            continue;
        }
        let mut ranges = Vec::new();
        let mut i = 0;
        while i < nums.len() {
            let mut j = i;
            while j + 1 < nums.len() && nums[j + 1] == nums[j] + 1 {
                j += 1;
            }
            if i == j {
                ranges.push(format!("{:0width$}", nums[i]));
            } else {
                ranges.push(format!("{:0width$}-{:0width$}", nums[i], nums[j]));
            }
            i = j + 1;
        }
        items.push(format!("{pre}[{}]{suf}", ranges.join(",")));
    }
    plain.sort();
    plain.dedup();
    items.extend(plain);
    items.join(",")
}

fn split_last_number(name: &str) -> Option<(&str, &str, &str)> {
    let bytes = name.as_bytes();
    let end = bytes.iter().rposition(u8::is_ascii_digit)? + 1;
    let start = bytes[..end]
        .iter()
        .rposition(|b| !b.is_ascii_digit())
        .map_or(0, |p| p + 1);
    Some((&name[..start], &name[start..end], &name[end..]))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn expands_ranges_lists_and_padding() {
        assert_eq!(expand("n[1-3]").unwrap(), ["n1", "n2", "n3"]);
        assert_eq!(expand("n[08-10]").unwrap(), ["n08", "n09", "n10"]);
        assert_eq!(expand("n[001-002,105]").unwrap(), ["n001", "n002", "n105"]);
        assert_eq!(
            expand("r[1-2]n[1-2]").unwrap(),
            ["r1n1", "r1n2", "r2n1", "r2n2"]
        );
        assert_eq!(
            expand("n[01-02],gpu[1-2]").unwrap(),
            ["n01", "n02", "gpu1", "gpu2"]
        );
        assert_eq!(expand("plain").unwrap(), ["plain"]);
        assert_eq!(expand("n[5]x").unwrap(), ["n5x"]);
    }

    #[test]
    fn rejects_bad_expressions() {
        assert!(matches!(expand("n[1-"), Err(HostlistError::Unclosed(_))));
        assert!(matches!(
            expand("n1]"),
            Err(HostlistError::UnexpectedClose(_))
        ));
        assert!(matches!(expand("n[[1]]"), Err(HostlistError::Nested(_))));
        assert!(matches!(
            expand("n[a-b]"),
            Err(HostlistError::BadRange { .. })
        ));
        assert!(matches!(expand("n[]"), Err(HostlistError::BadRange { .. })));
        assert!(matches!(
            expand("n[5-1]"),
            Err(HostlistError::Backwards { .. })
        ));
        assert!(matches!(
            expand("n[0-99999999]"),
            Err(HostlistError::TooLarge { .. })
        ));
        assert!(matches!(expand(""), Err(HostlistError::Empty(_))));
    }

    #[test]
    fn collapses() {
        assert_eq!(collapse(&["n01", "n02", "n03", "n05"]), "n[01-03,05]");
        assert_eq!(collapse(&["a", "n1"]), "n1,a");
        assert_eq!(collapse(&["r1n1", "r1n2"]), "r1n[1-2]");
    }

    fn name() -> impl Strategy<Value = String> {
        ("[a-z]{1,3}", 0u64..300, prop::bool::ANY, "[a-z]{0,2}").prop_map(|(p, n, pad, s)| {
            if pad {
                format!("{p}{n:03}{s}")
            } else {
                format!("{p}{n}{s}")
            }
        })
    }

    proptest! {
        #[test]
        fn collapse_then_expand_is_identity(names in prop::collection::vec(name(), 1..40)) {
            let folded = collapse(&names);
            let back: BTreeSet<String> = expand(&folded).unwrap().into_iter().collect();
            let want: BTreeSet<String> = names.into_iter().collect();
            prop_assert_eq!(back, want);
        }

        #[test]
        fn ranges_expand_to_count_and_width(lo in 0u64..500, len in 0u64..50, width in 1usize..5) {
            let hi = lo + len;
            let expr = format!("n[{lo:0width$}-{hi}]");
            let names = expand(&expr).unwrap();
            prop_assert_eq!(names.len() as u64, len + 1);
            let w = format!("{lo:0width$}").len();
            for (i, n) in names.iter().enumerate() {
                prop_assert_eq!(n, &format!("n{:0w$}", lo + i as u64));
            }
        }
    }
}
