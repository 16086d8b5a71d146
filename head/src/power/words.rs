//! Splitting a rendered BMC command into the program's argument vector.
//!
//! The rules are the word-splitting part of POSIX `sh`, without any
//! expansion: blanks and newlines separate words, `'…'` keeps everything
//! literally, `"…"` keeps everything but lets a backslash escape `"`, `\`,
//! `$` and `` ` ``, and an unquoted backslash escapes the next character.
//! `$HOME`, `*`, `|` and `;` are ordinary characters, so a node's password
//! never reaches a shell.

use thiserror::Error;

/// Why a command line could not be split.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WordsError {
    #[error("unterminated {quote} quote")]
    Unterminated { quote: &'static str },
    #[error("backslash at the end of the command")]
    TrailingBackslash,
}

/// Splits `line` into words (see the module docs).
pub fn split(line: &str) -> Result<Vec<String>, WordsError> {
    let mut words = Vec::new();
    let mut word = String::new();
    // A word exists once it has a character or a (possibly empty) quote.
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(q) => word.push(q),
                        None => return Err(WordsError::Unterminated { quote: "single" }),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '\\' | '$' | '`')) => word.push(e),
                            Some('\n') => {}
                            Some(other) => {
                                word.push('\\');
                                word.push(other);
                            }
                            None => return Err(WordsError::Unterminated { quote: "double" }),
                        },
                        Some(q) => word.push(q),
                        None => return Err(WordsError::Unterminated { quote: "double" }),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(e) => {
                    in_word = true;
                    word.push(e);
                }
                None => return Err(WordsError::TrailingBackslash),
            },
            other => {
                in_word = true;
                word.push(other);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Quotes `word` so that [`split`] (and `sh`) reads it back unchanged; plain
/// words stay as they are. Used to print commands (`--show`, `--dryrun`).
pub fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%^".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The words joined for display, each quoted when needed.
pub fn join(words: &[String]) -> String {
    words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(line: &str) -> Vec<String> {
        split(line).unwrap()
    }

    #[test]
    fn splits_like_sh_without_expansion() {
        assert_eq!(
            s("  ipmitool  -H 10.0.0.1\n chassis\tpower on "),
            ["ipmitool", "-H", "10.0.0.1", "chassis", "power", "on"]
        );
        assert_eq!(
            s(r#"-P "a b\"c\\d" -e '~' x"y"'z'"#),
            ["-P", "a b\"c\\d", "-e", "~", "xyz"]
        );
        assert_eq!(
            s(r#"-P "$HOME;|`x`" \$y a\ b"#),
            ["-P", "$HOME;|`x`", "$y", "a b"]
        );
        assert_eq!(s(r#"-U "" -P ''"#), ["-U", "", "-P", ""]);
        assert_eq!(s(r#""a\nb""#), [r"a\nb"]);
        assert!(s(" \n ").is_empty());
    }

    #[test]
    fn unbalanced_quotes_are_errors() {
        assert_eq!(
            split("ipmitool -P 'abc"),
            Err(WordsError::Unterminated { quote: "single" })
        );
        assert_eq!(
            split("-P \"abc"),
            Err(WordsError::Unterminated { quote: "double" })
        );
        assert_eq!(split("abc \\"), Err(WordsError::TrailingBackslash));
    }

    #[test]
    fn quote_round_trips() {
        for w in ["plain", "", "a b", "it's", "$(reboot)", "x\"y\\z", "~"] {
            assert_eq!(s(&quote(w)), [w], "{w:?}");
        }
        assert_eq!(quote("10.0.0.1"), "10.0.0.1");
        assert_eq!(join(&["a".into(), "b c".into()]), "a 'b c'");
    }
}
