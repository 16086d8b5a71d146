//! [`Template`]: parse a `.ww` source once, render it many times.
//!
//! Parsing builds a `gotmpl` template with Go's builtins, the Sprig subset and
//! Warewulf's functions, then runs the parse-time checks Go makes and
//! `gotmpl` does not (see `compat`). A parsed template is immutable, `Send`
//! and `Sync`; [`Template::render`] takes `&self` and may run on many threads
//! at once (about 36 µs for a two-interface NetworkManager template in a
//! release build). Each render gets its own state (see `context`).

use crate::context::{self, RenderState};
use crate::env::RenderEnv;
use crate::error::TemplateError;
use crate::output::{self, Rendered};
use crate::value::Value;
use crate::{compat, sprig, warewulf};

/// A parsed template, ready to render.
#[derive(Clone)]
pub struct Template {
    name: String,
    inner: gotmpl::Template,
    entry: Entry,
}

/// Which tree a render starts from: the body registered under the
/// template's name (where the `{{template}}` rewrite lands) or, for a body
/// that is only whitespace and defines, the engine's root tree.
#[derive(Clone, Copy, Debug)]
enum Entry {
    Named,
    Root,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template")
            .field("name", &self.name)
            .finish()
    }
}

impl Template {
    /// Parses `source`; `name` appears in errors (Warewulf uses the file's base name).
    pub fn parse(name: &str, source: &str) -> Result<Template, TemplateError> {
        let inner = sprig::register(warewulf::register(gotmpl::Template::new(name)))
            .func(compat::NIL_FUNC, |_| Ok(gotmpl::Value::Nil));
        let mut inner = inner
            .parse(source)
            .map_err(|e| TemplateError::from_parse(name, e))?;
        compat::check_blocks(name, source)?;
        let names: Vec<String> = inner.templates().iter().map(|n| n.to_string()).collect();
        for tree_name in &names {
            let Some(tree) = inner.lookup(tree_name) else {
                continue;
            };
            compat::TreeCheck::run(name, source, &known_function, tree)?;
            if let Some(fixed) = compat::rewrite(tree) {
                inner = inner.add_parse_tree(tree_name, fixed);
            }
        }
        let entry = if names.iter().any(|n| n == name) {
            Entry::Named
        } else {
            Entry::Root
        };
        Ok(Template {
            name: name.to_string(),
            inner,
            entry,
        })
    }

    /// Runs the engine on `data`.
    fn execute(&self, data: &Value) -> Result<String, gotmpl::TemplateError> {
        match self.entry {
            Entry::Named => self.inner.execute_template_to_string(&self.name, &data.0),
            Entry::Root => self.inner.execute_to_string(&data.0),
        }
    }

    /// Reads and parses a template file, named by its base name as Warewulf
    /// names it (`hosts.ww`). Bytes that are not UTF-8 are replaced.
    pub fn from_file(path: &std::path::Path) -> Result<Template, TemplateError> {
        let name = path
            .file_name()
            .map_or_else(|| path.to_string_lossy(), |n| n.to_string_lossy())
            .into_owned();
        let bytes = std::fs::read(path).map_err(|source| TemplateError::Read {
            template: path.display().to_string(),
            source,
        })?;
        Template::parse(&name, &String::from_utf8_lossy(&bytes))
    }

    /// The name given to [`Template::parse`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Executes the template on `data` and splits the result into outputs.
    pub fn render(&self, data: &Value, env: &RenderEnv) -> Result<Rendered, TemplateError> {
        let entered = context::enter(RenderState::new(env.clone(), data.0.clone()));
        let result = self.execute(data);
        let state = entered.finish();
        let text = result.map_err(|e| TemplateError::from_exec(&self.name, e))?;
        let state = state.ok_or_else(|| TemplateError::Exec {
            template: self.name.clone(),
            message: "render state lost".to_string(),
        })?;
        Ok(Rendered {
            outputs: output::split(&text, state.write_file, state.backup),
            files_read: state.files_read,
        })
    }

    /// Executes the template and returns the raw text, before `file` and
    /// `softlink` markers are interpreted (what `wwctl overlay show` prints).
    pub fn render_text(&self, data: &Value, env: &RenderEnv) -> Result<String, TemplateError> {
        let entered = context::enter(RenderState::new(env.clone(), data.0.clone()));
        let result = self.execute(data);
        drop(entered);
        result.map_err(|e| TemplateError::from_exec(&self.name, e))
    }
}

fn known_function(name: &str) -> bool {
    compat::is_builtin(name) || sprig::NAMES.contains(&name) || warewulf::NAMES.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn template_is_shareable() {
        assert_send_sync::<Template>();
        assert_send_sync::<RenderEnv>();
        assert_send_sync::<Value>();
    }
}
