//! Per-render state reachable from template functions.
//!
//! The engine takes its functions once, at parse time, as `Fn(&[Value])`
//! closures shared by every render; they cannot capture a particular render.
//! Rendering is synchronous on the calling thread, so [`enter`] pushes the
//! render's state on a thread-local stack for the duration of the render and
//! the functions reach it through [`with`]. A stack (not a slot) keeps nested
//! renders on one thread correct; the guard pops even when a render unwinds.

use std::cell::RefCell;
use std::path::PathBuf;

use crate::env::RenderEnv;

/// What a render needs and what its functions record.
pub(crate) struct RenderState {
    pub(crate) env: RenderEnv,
    /// The template's root data (`$`), for `IgnitionJson`.
    pub(crate) root: gotmpl::Value,
    /// Host paths read (or attempted) by `Include` and friends, first use first.
    pub(crate) files_read: Vec<PathBuf>,
    /// Cleared by `abort`.
    pub(crate) write_file: bool,
    /// Cleared by `nobackup`.
    pub(crate) backup: bool,
}

impl RenderState {
    pub(crate) fn new(env: RenderEnv, root: gotmpl::Value) -> Self {
        RenderState {
            env,
            root,
            files_read: Vec::new(),
            write_file: true,
            backup: true,
        }
    }

    /// Records a file the output depends on (once).
    pub(crate) fn record(&mut self, path: PathBuf) {
        if !self.files_read.contains(&path) {
            self.files_read.push(path);
        }
    }
}

thread_local! {
    static STACK: RefCell<Vec<RenderState>> = const { RefCell::new(Vec::new()) };
}

/// Keeps a render's state on the stack; [`Entered::finish`] takes it back.
pub(crate) struct Entered {
    depth: usize,
    done: bool,
}

/// Makes `state` the current render's state until the guard is finished or dropped.
pub(crate) fn enter(state: RenderState) -> Entered {
    let depth = STACK.with(|s| {
        let mut s = s.borrow_mut();
        s.push(state);
        s.len()
    });
    Entered { depth, done: false }
}

impl Entered {
    /// Pops and returns the state pushed by [`enter`].
    pub(crate) fn finish(mut self) -> Option<RenderState> {
        self.done = true;
        STACK.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() == self.depth { s.pop() } else { None }
        })
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        if !self.done {
            STACK.with(|s| {
                let mut s = s.borrow_mut();
                s.truncate(self.depth.saturating_sub(1));
            });
        }
    }
}

/// Runs `f` on the current render's state; an error outside a render.
///
/// `f` must not render templates or call user code that might.
pub(crate) fn with<R>(f: impl FnOnce(&mut RenderState) -> R) -> gotmpl::Result<R> {
    STACK.with(|s| {
        let mut s = s.borrow_mut();
        match s.last_mut() {
            Some(state) => Ok(f(state)),
            None => Err(gotmpl::TemplateError::Exec(
                "template function called outside a render".to_string(),
            )),
        }
    })
}
