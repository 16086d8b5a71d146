//! Fuzzes the template engine (Go text/template + Sprig + Warewulf's
//! functions): parse, then render against a small node, with file access
//! confined to an empty temp root. Errors are fine; panics and hangs are not.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wwtemplate::{RenderEnv, Template, Value};

fn env() -> &'static (tempfile::TempDir, RenderEnv, Value) {
    static ENV: OnceLock<(tempfile::TempDir, RenderEnv, Value)> = OnceLock::new();
    ENV.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let env = RenderEnv::new()
            .with_root(dir.path())
            .with_sysconfdir(dir.path().to_string_lossy().into_owned());
        let data = Value::object()
            .field("Id", "n01")
            .field("Ipaddr", "10.0.0.1")
            .field("Tags", Value::map([("a", "1"), ("b", "2")]))
            .field("List", Value::list(["x", "y", "z"]))
            .into();
        (dir, env, data)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    // Bound work: a template's output is small; huge loops are not.
    if src.len() > 4096 {
        return;
    }
    let Ok(t) = Template::parse("fuzz", src) else {
        return;
    };
    let (_, env, value) = env();
    let _ = t.render(value, env);
});
