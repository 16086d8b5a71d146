//! Warewulf-compatible rendering of `.ww` overlay templates.
//!
//! Warewulf renders overlay templates with Go's `text/template`, Sprig and a
//! handful of its own functions, then post-processes the output for `file`,
//! `softlink`, `abort` and `nobackup`. This crate does the same in Rust so
//! that sites keep their templates byte-for-byte:
//!
//! ```
//! use wwtemplate::{RenderEnv, Template, Value};
//!
//! # fn main() -> Result<(), wwtemplate::TemplateError> {
//! let t = Template::parse("hostname.ww", "{{ .Id }}\n")?;
//! let node = Value::object().field("Id", "n1").build();
//! let out = t.render(&node, &RenderEnv::new())?;
//! assert_eq!(out.outputs[0].content, b"n1\n");
//! # Ok(())
//! # }
//! ```
//!
//! - The language is `gotmpl`'s port of `text/template` (trim markers,
//!   pipelines, variables and assignment, `if/else if/with/else with/range/
//!   define/template/block/break/continue`, Go's comparison and `printf`),
//!   with `missingkey=default` (`<no value>`).
//! - Functions: Go's builtins, a Sprig subset (`default empty coalesce
//!   ternary list append push join set unset dict hasKey keys lower upper
//!   splitList split regexMatch regexSplit regexReplaceAll
//!   regexReplaceAllLiteral regexFind regexFindAll substr trim trimAll
//!   trimSuffix trimPrefix replace contains hasPrefix hasSuffix without toJson
//!   quote squote indent nindent first last uniq has cat add add1 sub mul div
//!   mod toString atoi int int64 sortAlpha repeat nospace title`) and Warewulf's `Include IncludeFrom IncludeBlock ImportLink basename
//!   inc dec file softlink readlink IgnitionJson abort nobackup UniqueField
//!   SystemdEscape SystemdEscapePath tr`.
//! - Parse once ([`Template::parse`]), render many times from many threads
//!   ([`Template::render`] takes `&self`); a render returns its outputs and
//!   the host files it read ([`Rendered`]).
//!
//! Known differences from Go (see also `gotmpl`'s own list):
//! - Data are maps; Go struct methods are precomputed fields ([`Object`]).
//!   A missing field renders `<no value>` where a Go struct would fail;
//!   methods with arguments must go through `call`; a value cannot be both
//!   printable (Warewulf's `WWbool` prints its string) and carry methods.
//! - Values are immutable. Sprig's in-place `set`/`unset` on a variable
//!   (`{{ $_ := set $d "k" "v" }}`, also `$d.A.B`) is emulated by updating
//!   the variable; other aliases of that dictionary (a list it was appended
//!   to, a second variable, `.` when `$` is updated) keep the old value.
//! - Sprig's typed map parameters (`keys`, `hasKey`) accept any map.
//! - Execution errors name the template but carry no line and column.
//! - An action printing a float whose `%v` uses an exponent in Go (`1e+06`)
//!   prints plain decimals; `printf` applies verbs to a list as a whole
//!   (Go formats each element); `%T` and `%#v` are not supported.
//! - Output is UTF-8: bytes of included files that are not UTF-8 are
//!   replaced (U+FFFD). Warewulf's 64 KiB line limit when scanning for
//!   `file` markers is not reproduced.

mod args;
mod compat;
mod context;
mod env;
mod error;
mod output;
mod sprig;
mod template;
mod value;
mod warewulf;

pub use env::{IgnitionFn, ImageResolver, RenderEnv};
pub use error::TemplateError;
pub use output::{Output, OutputKind, Rendered};
pub use template::Template;
pub use value::{FunctionValue, Object, Value};
