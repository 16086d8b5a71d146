//! Running the admin's `$EDITOR` (default `vi`) on a file, for the `edit`
//! commands.

use std::path::Path;

use anyhow::{Context, Result, bail};

/// Opens `path` in `$EDITOR` and waits; fails when the editor does.
pub fn edit(path: &Path) -> Result<()> {
    let editor = std::env::var("EDITOR")
        .ok()
        .filter(|e| !e.trim().is_empty())
        .unwrap_or_else(|| "vi".into());
    // Through the shell so `EDITOR="code --wait"` works, the path as "$1".
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(path)
        .status()
        .with_context(|| format!("running {editor}"))?;
    if !status.success() {
        bail!("{editor} exited with {status}");
    }
    Ok(())
}
