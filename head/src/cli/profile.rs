//! `wwctl profile`: add, set, unset, list, delete and edit node profiles in
//! `nodes.conf`. Field flags are shared with `wwctl node`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};

use super::Context;
use super::node::{
    Entries, FieldArgs, UnsetArgs, check_input, confirm_selected, edit_yaml, parse_entry_map,
    select, select_any, update,
};
use super::output::{FormatArgs, Table};
use crate::nodedb::merge::flatten;
use crate::nodedb::model::NodeConf;
use crate::nodedb::store::NodeDb;
use crate::nodedb::validate::Owner;

/// Manage node profiles.
#[derive(Debug, Args)]
pub struct ProfileArgs {
    #[command(subcommand)]
    pub command: ProfileCommand,
}

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Add new profiles.
    #[command(visible_alias = "new")]
    Add(AddArgs),
    /// Set fields of profiles matching PATTERN.
    #[command(visible_alias = "modify")]
    Set(SetArgs),
    /// Clear fields of profiles matching PATTERN.
    Unset(UnsetCmd),
    /// List profiles and their settings.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Delete profiles matching PATTERN.
    #[command(visible_alias = "rm", alias = "del", alias = "remove")]
    Delete(DeleteArgs),
    /// Edit profiles as YAML in $EDITOR.
    Edit(EditArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Profile names.
    #[arg(required = true, value_name = "PROFILE")]
    pub names: Vec<String>,
    #[command(flatten)]
    pub fields: FieldArgs,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// Profiles to change (names or globs).
    #[arg(value_name = "PATTERN", required_unless_present = "all")]
    pub patterns: Vec<String>,
    /// Apply to all profiles.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
    #[command(flatten)]
    pub fields: FieldArgs,
}

#[derive(Debug, Args)]
pub struct UnsetCmd {
    /// Profiles to change (names or globs).
    #[arg(value_name = "PATTERN", required = true)]
    pub patterns: Vec<String>,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
    #[command(flatten)]
    pub fields: UnsetArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Profiles to list; all when empty.
    #[arg(value_name = "PATTERN")]
    pub patterns: Vec<String>,
    /// Every set field.
    #[arg(short = 'a', long)]
    pub all: bool,
    #[command(flatten)]
    pub format: FormatArgs,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Profiles to delete.
    #[arg(value_name = "PATTERN", required = true)]
    pub patterns: Vec<String>,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct EditArgs {
    /// Profiles to edit; all when empty.
    #[arg(value_name = "PATTERN")]
    pub patterns: Vec<String>,
}

pub fn run(ctx: &Context, args: ProfileArgs) -> Result<()> {
    let path = ctx.config.nodes_conf();
    match args.command {
        ProfileCommand::Add(a) => add(&path, a),
        ProfileCommand::Set(a) => set(&path, a),
        ProfileCommand::Unset(a) => unset(&path, a),
        ProfileCommand::List(a) => list(&path, a),
        ProfileCommand::Delete(a) => delete(&path, a),
        ProfileCommand::Edit(a) => edit(&path, a),
    }
}

fn add(path: &Path, a: AddArgs) -> Result<()> {
    a.fields.check()?;
    update(path, |db| {
        for name in &a.names {
            if name.trim().is_empty() || name.starts_with('~') {
                bail!("invalid profile name {name:?}");
            }
            if db.profiles().contains_key(name) {
                bail!("profile {name} already exists");
            }
            let mut p = NodeConf::default();
            a.fields
                .apply(&mut p, 0)
                .with_context(|| format!("profile {name}"))?;
            p.tidy();
            db.profiles_mut().insert(name.clone(), p);
        }
        Ok(())
    })
}

fn set(path: &Path, a: SetArgs) -> Result<()> {
    a.fields.check()?;
    let patterns = if a.all {
        Vec::new()
    } else {
        a.patterns.clone()
    };
    confirm_selected(path, Entries::Profiles, &patterns, "modify", a.yes)?;
    update(path, |db| {
        for name in select(db.profiles(), &patterns, "profile")? {
            let p = db
                .profiles_mut()
                .get_mut(&name)
                .expect("selected from this map");
            a.fields
                .apply(p, 0)
                .with_context(|| format!("profile {name}"))?;
            p.tidy();
        }
        Ok(())
    })
}

fn unset(path: &Path, a: UnsetCmd) -> Result<()> {
    confirm_selected(path, Entries::Profiles, &a.patterns, "modify", a.yes)?;
    update(path, |db| {
        for name in select(db.profiles(), &a.patterns, "profile")? {
            let p = db
                .profiles_mut()
                .get_mut(&name)
                .expect("selected from this map");
            a.fields.apply(p);
            p.tidy();
        }
        Ok(())
    })
}

fn delete(path: &Path, a: DeleteArgs) -> Result<()> {
    confirm_selected(path, Entries::Profiles, &a.patterns, "delete", a.yes)?;
    update(path, |db| {
        for name in select(db.profiles(), &a.patterns, "profile")? {
            db.profiles_mut().remove(&name);
        }
        Ok(())
    })
}

fn list(path: &Path, a: ListArgs) -> Result<()> {
    let db = NodeDb::load(path)?;
    let names = select_any(db.conf.profiles(), &a.patterns)?;
    let chosen: BTreeMap<&String, &NodeConf> = names
        .iter()
        .filter_map(|n| db.conf.profiles().get_key_value(n))
        .collect();
    if a.format.print_structured(&chosen)? {
        return Ok(());
    }
    if a.all {
        let mut t = Table::new(["PROFILE", "FIELD", "PROFILE", "VALUE"]);
        for (name, p) in &chosen {
            t.row([name.to_string(), "Id".into(), "--".into(), name.to_string()]);
            for (field, _, value) in flatten(p) {
                t.row([name.to_string(), field, name.to_string(), value]);
            }
        }
        t.print();
    } else {
        let mut t = Table::new(["PROFILE NAME", "COMMENT/DESCRIPTION"]);
        for (name, p) in &chosen {
            t.row([
                name.to_string(),
                p.comment.clone().unwrap_or_else(|| "--".into()),
            ]);
        }
        t.print();
    }
    Ok(())
}

fn edit(path: &Path, a: EditArgs) -> Result<()> {
    let db = NodeDb::load(path)?;
    let names = select(db.conf.profiles(), &a.patterns, "profile")?;
    let current: BTreeMap<String, NodeConf> = names
        .iter()
        .filter_map(|n| db.conf.profiles().get(n).map(|c| (n.clone(), c.clone())))
        .collect();
    let Some((file, text)) = edit_yaml(&current)? else {
        println!("no changes");
        return Ok(());
    };
    let edited = parse_entry_map(&text, &file)?;
    update(path, |db| {
        let before = db.clone();
        for name in current.keys() {
            db.profiles_mut().remove(name);
        }
        for (name, p) in &edited {
            db.profiles_mut().insert(name.clone(), p.clone());
        }
        check_input(&before, db, Owner::Profile, &edited, &file, &text)
    })
}
