//! BMC command templates: finding a node's template, rendering it with the
//! node's `ipmi:` fields and an action, and splitting the result into argv.
//!
//! As in Warewulf, `ipmi: template` names a file in `<datadir>/warewulf/bmc/`
//! (an absolute path is used as it is) and defaults to `ipmitool.tmpl`. The
//! template sees the merged IPMI fields under Warewulf's names (`.Ipaddr
//! .Netmask .Gateway .Port .UserName .Password .Interface .EscapeChar .Write
//! .Template .Tags`) and `.Cmd`, the action (`PowerOn`, …, `Console`). The
//! rendered text is one command line; it is run without a shell (see
//! [`super::words`]). When `ipmitool.tmpl` is not installed the copy built
//! into `wwctl` (`head/share/bmc/ipmitool.tmpl`) is used.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use wwtemplate::{RenderEnv, Template, Value};

use super::{BmcCmd, PowerError, words};
use crate::nodedb::model::IpmiConf;

/// The template used when a node names none.
pub const DEFAULT_TEMPLATE: &str = "ipmitool.tmpl";

/// The shipped default, used when `<datadir>/warewulf/bmc/ipmitool.tmpl` is
/// not installed.
const SHIPPED_IPMITOOL: &str = include_str!("../../share/bmc/ipmitool.tmpl");

/// Parsed BMC templates, loaded once per name and shared by every node.
#[derive(Debug)]
pub struct Templates {
    dir: PathBuf,
    cache: Mutex<HashMap<String, Arc<Template>>>,
}

impl Templates {
    /// Templates from `<datadir>/warewulf/bmc`.
    pub fn new(datadir: &Path) -> Self {
        Self {
            dir: datadir.join("warewulf").join("bmc"),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The folder relative template names are looked up in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The template `name` (a file name, or an absolute path), parsed.
    pub fn get(&self, name: &str) -> Result<Arc<Template>, PowerError> {
        let name = if name.trim().is_empty() {
            DEFAULT_TEMPLATE
        } else {
            name.trim()
        };
        if let Some(t) = self.cache.lock().expect("cache lock poisoned").get(name) {
            return Ok(Arc::clone(t));
        }
        let path = if Path::new(name).is_absolute() {
            PathBuf::from(name)
        } else {
            self.dir.join(name)
        };
        let base = path
            .file_name()
            .map_or_else(|| name.to_owned(), |n| n.to_string_lossy().into_owned());
        let source = match std::fs::read(&path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && name == DEFAULT_TEMPLATE => {
                tracing::debug!("{} not installed; using the built-in copy", path.display());
                SHIPPED_IPMITOOL.to_owned()
            }
            Err(source) => return Err(PowerError::TemplateMissing { path, source }),
        };
        let template =
            Arc::new(Template::parse(&base, &source).map_err(PowerError::TemplateParse)?);
        self.cache
            .lock()
            .expect("cache lock poisoned")
            .insert(name.to_owned(), Arc::clone(&template));
        Ok(template)
    }
}

/// The template data for `ipmi` and `cmd`, with Warewulf's field names.
/// Unset fields are empty strings (false in `if`), as in Warewulf's structs.
pub fn data(ipmi: &IpmiConf, cmd: BmcCmd) -> Value {
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    Value::object()
        .field("Ipaddr", s(&ipmi.ipaddr))
        .field("Netmask", s(&ipmi.netmask))
        .field("Gateway", s(&ipmi.gateway))
        .field("Port", s(&ipmi.port))
        .field("UserName", s(&ipmi.username))
        .field("Password", s(&ipmi.password))
        .field("Interface", s(&ipmi.interface))
        .field("EscapeChar", s(&ipmi.escapechar))
        .field(
            "Write",
            Value::wwbool(ipmi.write.as_deref().unwrap_or_default()),
        )
        .field("Template", s(&ipmi.template))
        .field("Tags", Value::map(ipmi.tags.clone().unwrap_or_default()))
        .field("Cmd", cmd.as_str())
        .build()
}

/// Renders `template` for `ipmi` and `cmd` and splits it into argv.
pub fn command(
    template: &Template,
    ipmi: &IpmiConf,
    cmd: BmcCmd,
) -> Result<Vec<String>, PowerError> {
    let text = template
        .render_text(&data(ipmi, cmd), &RenderEnv::new())
        .map_err(PowerError::Render)?;
    tracing::trace!("{} rendered {:?}", template.name(), text.trim());
    let argv = words::split(&text).map_err(|source| PowerError::Words {
        template: template.name().to_owned(),
        source,
    })?;
    if argv.is_empty() {
        return Err(PowerError::Empty {
            template: template.name().to_owned(),
            cmd: cmd.as_str(),
        });
    }
    Ok(argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipmi(fields: &[(&str, &str)]) -> IpmiConf {
        let mut i = IpmiConf::default();
        for (k, v) in fields {
            let v = Some((*v).to_owned());
            match *k {
                "ipaddr" => i.ipaddr = v,
                "port" => i.port = v,
                "username" => i.username = v,
                "password" => i.password = v,
                "interface" => i.interface = v,
                "escapechar" => i.escapechar = v,
                _ => unreachable!("test field {k}"),
            }
        }
        i
    }

    fn shipped() -> Template {
        Template::parse(DEFAULT_TEMPLATE, SHIPPED_IPMITOOL).unwrap()
    }

    #[test]
    fn shipped_template_renders_every_action() {
        let t = shipped();
        let i = ipmi(&[("ipaddr", "10.0.0.5")]);
        for (cmd, tail) in [
            (BmcCmd::PowerOn, "chassis power on"),
            (BmcCmd::PowerOff, "chassis power off"),
            (BmcCmd::PowerCycle, "chassis power cycle"),
            (BmcCmd::PowerReset, "chassis power reset"),
            (BmcCmd::PowerSoft, "chassis power soft"),
            (BmcCmd::PowerStatus, "chassis power status"),
            (BmcCmd::SdrList, "sdr list"),
            (BmcCmd::SensorList, "sensor list"),
            (BmcCmd::Console, "sol activate"),
        ] {
            let argv = command(&t, &i, cmd).unwrap();
            assert_eq!(
                argv.join(" "),
                format!("ipmitool -I lan -H 10.0.0.5 {tail}"),
                "{cmd:?}"
            );
        }
    }

    #[test]
    fn every_field_reaches_its_flag_unchanged() {
        let i = ipmi(&[
            ("ipaddr", "192.168.1.9"),
            ("port", "6230"),
            ("username", "ad min"),
            ("password", "p\"a'ss $(reboot) \\x"),
            ("interface", "lanplus"),
            ("escapechar", "~"),
        ]);
        let mut i = i;
        i.tags = Some([("ciphersuite".to_owned(), "3".to_owned())].into());
        let argv = command(&shipped(), &i, BmcCmd::PowerStatus).unwrap();
        assert_eq!(
            argv,
            [
                "ipmitool",
                "-I",
                "lanplus",
                "-H",
                "192.168.1.9",
                "-p",
                "6230",
                "-U",
                "ad min",
                "-P",
                "p\"a'ss $(reboot) \\x",
                "-e",
                "~",
                "-C",
                "3",
                "chassis",
                "power",
                "status"
            ]
        );
    }

    #[test]
    fn site_templates_see_warewulf_names() {
        let t = Template::parse(
            "mine.tmpl",
            "mytool {{ .Cmd }} {{ .Ipaddr }} {{ .Tags.rack }}{{ if .Write }} w{{ end }}\n\n",
        )
        .unwrap();
        let mut i = ipmi(&[("ipaddr", "10.1.1.1")]);
        i.tags = Some([("rack".to_owned(), "r7".to_owned())].into());
        i.write = Some("yes".into());
        assert_eq!(
            command(&t, &i, BmcCmd::PowerCycle).unwrap(),
            ["mytool", "PowerCycle", "10.1.1.1", "r7", "w"]
        );
    }

    #[test]
    fn empty_and_broken_renders_are_errors() {
        let i = ipmi(&[("ipaddr", "10.1.1.1")]);
        let empty = Template::parse("e.tmpl", "{{ if false }}x{{ end }}\n").unwrap();
        let e = command(&empty, &i, BmcCmd::PowerOn).unwrap_err();
        assert_eq!(
            e.to_string(),
            "BMC template e.tmpl rendered no command for PowerOn"
        );
        let open = Template::parse("q.tmpl", "tool -P '{{ .Ipaddr }}\n").unwrap();
        let e = command(&open, &i, BmcCmd::PowerOn).unwrap_err();
        assert!(matches!(e, PowerError::Words { .. }), "{e:?}");
    }

    #[test]
    fn lookup_uses_datadir_then_the_built_in_default() {
        let dir = tempfile::tempdir().unwrap();
        let t = Templates::new(dir.path());
        assert_eq!(t.dir(), dir.path().join("warewulf/bmc"));
        // Not installed: the built-in ipmitool.tmpl.
        assert_eq!(t.get("").unwrap().name(), DEFAULT_TEMPLATE);
        let missing = t.get("racadm.tmpl").unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("warewulf/bmc/racadm.tmpl not found"),
            "{missing}"
        );
        std::fs::create_dir_all(t.dir()).unwrap();
        std::fs::write(t.dir().join("racadm.tmpl"), "racadm {{ .Cmd }}").unwrap();
        let got = t.get("racadm.tmpl").unwrap();
        assert_eq!(
            command(&got, &IpmiConf::default(), BmcCmd::PowerOff).unwrap(),
            ["racadm", "PowerOff"]
        );
        let abs = dir.path().join("abs.tmpl");
        std::fs::write(&abs, "{{ .Cmd").unwrap();
        let e = t.get(abs.to_str().unwrap()).unwrap_err();
        assert!(matches!(e, PowerError::TemplateParse(_)), "{e:?}");
    }
}
