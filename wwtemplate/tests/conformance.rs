//! Conformance suite: Go `text/template` semantics, the Sprig subset and
//! Warewulf's functions, each checked against the output Go + Sprig +
//! Warewulf produce for the same template and data.
//!
//! Tables are `(case name, template, expected output)`; the fixture data is
//! [`data`], the fixture filesystem [`Site`].

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use wwtemplate::{OutputKind, RenderEnv, Rendered, Template, TemplateError, Value};

/// The data every table case renders with.
fn data() -> Value {
    let eth0 = Value::object()
        .field("Device", "eth0")
        .field("Type", "ethernet")
        .field("Hwaddr", "aa:bb:cc:dd:ee:ff")
        .field("Ipaddr", "10.0.0.5")
        .field("IpCIDR", "10.0.0.5/16")
        .field("MTU", "")
        .field("OnBoot", Value::wwbool(""))
        .method("Primary", || Value::from(true))
        .field(
            "Tags",
            Value::map([
                ("DNS1", "1.1.1.1"),
                ("DNS2", "8.8.8.8"),
                ("DNSSEARCH", "a.org; b.org"),
            ]),
        )
        .build();
    let ib0 = Value::object()
        .field("Device", "ib0")
        .field("Type", "InfiniBand")
        .field("Hwaddr", "")
        .field("Ipaddr", "")
        .field("MTU", "2044")
        .field("OnBoot", Value::wwbool("no"))
        .method("Primary", || Value::from(false))
        .field("Tags", Value::map(Vec::<(String, Value)>::new()))
        .build();
    let fs = |path: &str, format: &str| {
        Value::object()
            .field("Path", path)
            .field("Format", format)
            .field("Id", format!("/dev/disk/by-partlabel/{format}"))
            .build()
    };
    let this_node = Value::object()
        .method("FileSystemList", || {
            Value::list([
                fs("/scratch", "ext4"),
                fs("", "swap"),
                fs("/var/tmp-x", "xfs"),
            ])
        })
        .build();
    let json = serde_json::json!({
        "Name": "World",
        "Str": "Hello, World",
        "Empty": "",
        "Zero": 0,
        "One": 1,
        "Neg": -3,
        "True": true,
        "False": false,
        "Float": 1.5,
        "Nil": null,
        "List": ["a", "b", "c"],
        "Ints": [1, 2, 3, 4, 5],
        "Dups": ["a", "b", "a", "c", "b"],
        "EmptyList": [],
        "Map": {"b": 2, "a": 1, "c": 3},
        "EmptyMap": {},
        "Tags": {"foo": "bar", "route1": "10.1.0.0/16,10.0.0.1"},
        "Html": "<a href=\"x\">&'</a>",
        "Path": "/var/lib/foo-bar",
        "Passwd": "root:x:0\nbin:x:1\nroot:y:0\nadm:x:3",
    });
    let serde_json::Value::Object(base) = json else {
        unreachable!("fixture is an object")
    };
    let mut fields: Vec<(String, Value)> =
        base.into_iter().map(|(k, v)| (k, Value::from(v))).collect();
    fields.push(("Id".into(), "n1".into()));
    fields.push(("NetDevs".into(), Value::map([("eth0", eth0), ("ib0", ib0)])));
    fields.push(("ThisNode".into(), this_node));
    fields.push((
        "Add".into(),
        Value::function(|args| {
            let sum: i64 = args.iter().filter_map(Value::as_i64).sum();
            Ok(Value::from(sum))
        }),
    ));
    fields.push(("Fail".into(), Value::function(|_| Err("boom".to_string()))));
    Value::map(fields)
}

/// A fake head filesystem and image store in a temporary folder.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let write = |p: &str, content: &str| {
            let path = root.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        };
        write("etc/hosts", "127.0.0.1 localhost\n10.0.0.1 head\n");
        write("etc/motd", "hello\n\n");
        write("etc/noeol", "no newline");
        write("etc/warewulf/site.conf", "site=1\n");
        write(
            "etc/block",
            "keep 1\r\nkeep 2\n# Do not edit after this line\nlost\n",
        );
        write("usr/share/zoneinfo/Europe/Berlin", "TZif");
        std::os::unix::fs::symlink("Europe/Berlin", root.join("usr/share/zoneinfo/CET")).unwrap();
        std::os::unix::fs::symlink("/usr/share/zoneinfo/CET", root.join("etc/localtime")).unwrap();
        let image = dir.path().join("images/rocky/rootfs");
        std::fs::create_dir_all(image.join("etc")).unwrap();
        std::fs::write(image.join("etc/passwd"), "root:x:0:0::/root:/bin/bash\n").unwrap();
        Site { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn env(&self) -> RenderEnv {
        let images = self.dir.path().join("images");
        RenderEnv::new()
            .with_root(self.root())
            .with_images(move |name: &str| {
                let p = images.join(name).join("rootfs");
                p.is_dir().then_some(p)
            })
            .with_ignition(|root: &Value| {
                format!(
                    "{{\"node\":\"{}\"}}",
                    root.get("Id").unwrap().as_str().unwrap()
                )
            })
    }
}

fn render_with(src: &str, env: &RenderEnv) -> Result<Rendered, TemplateError> {
    Template::parse("case.ww", src)?.render(&data(), env)
}

fn text(r: &Rendered) -> String {
    assert_eq!(r.outputs.len(), 1, "one output expected: {r:?}");
    String::from_utf8(r.outputs[0].content.clone()).unwrap()
}

/// Runs a table of `(name, template, expected)` and reports every mismatch.
fn run_table(table: &[(&str, &str, &str)], env: &RenderEnv) {
    let mut failures = Vec::new();
    for (name, src, want) in table {
        match render_with(src, env) {
            Ok(r) => {
                let got = text(&r);
                if got != *want {
                    failures.push(format!("{name}: got {got:?}, want {want:?}"));
                }
            }
            Err(e) => failures.push(format!("{name}: error {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Runs a table of `(name, template, expected error substring)`.
fn run_error_table(table: &[(&str, &str, &str)], env: &RenderEnv) {
    let mut failures = Vec::new();
    for (name, src, want) in table {
        match render_with(src, env) {
            Ok(r) => failures.push(format!("{name}: no error, rendered {r:?}")),
            Err(e) => {
                let msg = e.to_string();
                if !msg.contains(want) {
                    failures.push(format!("{name}: error {msg:?} lacks {want:?}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn language() {
    let table: &[(&str, &str, &str)] = &[
        ("text", "plain text\n", "plain text\n"),
        ("field", "{{.Name}}", "World"),
        (
            "dollar",
            "{{range .List}}{{$.Name}}{{end}}",
            "WorldWorldWorld",
        ),
        ("nested field", "{{.NetDevs.eth0.Device}}", "eth0"),
        ("trim both", "a  {{- \"b\" -}}  c", "abc"),
        ("trim newlines", "{{\"a\" -}}\n\n  b\n  {{- \"c\"}}", "abc"),
        ("trim comment", "x\n{{- /* note */ -}}\ny", "xy"),
        ("no trim without space", "{{3 }}-{{ -4}}", "3--4"),
        ("comment", "a{{/* c */}}b", "ab"),
        ("raw string", "{{`a\\nb`}}", "a\\nb"),
        ("string escape", "{{\"a\\tb\"}}", "a\tb"),
        ("char constant", "{{'a'}}", "97"),
        ("hex number", "{{0x1F}}", "31"),
        ("float number", "{{1.5}}", "1.5"),
        ("exp number", "{{1e3}}", "1000"),
        ("bool constant", "{{true}}", "true"),
        ("pipeline", "{{.Name | printf \"%s!\"}}", "World!"),
        (
            "pipeline chain",
            "{{\"abc\" | len | printf \"%03d\"}}",
            "003",
        ),
        (
            "parenthesized",
            "{{printf \"%s-%s\" (print \"a\") .Name}}",
            "a-World",
        ),
        ("declare", "{{$x := .Name}}{{$x}}", "World"),
        ("assign", "{{$x := 1}}{{$x = 2}}{{$x}}", "2"),
        (
            "assign in if",
            "{{$x := 1}}{{if true}}{{$x = 2}}{{end}}{{$x}}",
            "2",
        ),
        (
            "shadow in if",
            "{{$x := 1}}{{if true}}{{$x := 2}}{{$x}}{{end}}{{$x}}",
            "21",
        ),
        (
            "accumulate",
            "{{$s := \"\"}}{{range .List}}{{$s = print $s .}}{{end}}{{$s}}",
            "abc",
        ),
        ("declare prints nothing", "{{$x := 5}}", ""),
        ("if true", "{{if .True}}y{{end}}", "y"),
        ("if empty string", "{{if .Empty}}y{{else}}n{{end}}", "n"),
        ("if zero", "{{if .Zero}}y{{else}}n{{end}}", "n"),
        ("if empty list", "{{if .EmptyList}}y{{else}}n{{end}}", "n"),
        ("if empty map", "{{if .EmptyMap}}y{{else}}n{{end}}", "n"),
        ("if nil", "{{if .Nil}}y{{else}}n{{end}}", "n"),
        ("if missing", "{{if .Missing}}y{{else}}n{{end}}", "n"),
        (
            "else if",
            "{{if .False}}a{{else if .One}}b{{else}}c{{end}}",
            "b",
        ),
        (
            "else",
            "{{if .False}}a{{else if .Zero}}b{{else}}c{{end}}",
            "c",
        ),
        ("with", "{{with .Name}}<{{.}}>{{end}}", "<World>"),
        ("with else", "{{with .Empty}}x{{else}}y{{end}}", "y"),
        (
            "else with",
            "{{with .Empty}}a{{else with .Name}}{{.}}{{else}}c{{end}}",
            "World",
        ),
        (
            "with variable",
            "{{with $x := .Name}}{{$x}}{{end}}",
            "World",
        ),
        ("range list", "{{range .List}}[{{.}}]{{end}}", "[a][b][c]"),
        (
            "range index",
            "{{range $i, $v := .List}}{{$i}}={{$v}},{{end}}",
            "0=a,1=b,2=c,",
        ),
        (
            "range map sorted",
            "{{range $k, $v := .Map}}{{$k}}{{$v}}{{end}}",
            "a1b2c3",
        ),
        ("range map values", "{{range .Map}}{{.}}{{end}}", "123"),
        ("range int", "{{range 3}}{{.}}{{end}}", "012"),
        (
            "range int var",
            "{{range $i := 2}}<{{$i}}>{{end}}",
            "<0><1>",
        ),
        (
            "range else",
            "{{range .EmptyList}}x{{else}}none{{end}}",
            "none",
        ),
        (
            "range nil else",
            "{{range .Nil}}x{{else}}none{{end}}",
            "none",
        ),
        (
            "range break",
            "{{range .Ints}}{{if eq . 3}}{{break}}{{end}}{{.}}{{end}}",
            "12",
        ),
        (
            "range continue",
            "{{range .Ints}}{{if eq . 3}}{{continue}}{{end}}{{.}}{{end}}",
            "1245",
        ),
        (
            "range assign vars",
            "{{$i := 9}}{{range $i = .List}}{{end}}{{$i}}",
            "c",
        ),
        (
            "range trims",
            "{{range .List -}}\n  {{.}}\n{{- end}}",
            "abc",
        ),
        (
            "define template",
            "{{define \"T\"}}[{{.}}]{{end}}{{template \"T\" .Name}}",
            "[World]",
        ),
        (
            "template no data",
            "{{define \"T\"}}{{.}}{{end}}{{template \"T\"}}",
            "<no value>",
        ),
        (
            "template own dollar",
            "{{define \"T\"}}{{$}}{{end}}{{template \"T\" 7}}",
            "7",
        ),
        ("block", "{{block \"B\" .Name}}<{{.}}>{{end}}", "<World>"),
        (
            "recursive template",
            "{{define \"R\"}}{{if .}}{{index . 0}}{{template \"R\" (slice . 1)}}{{end}}{{end}}{{template \"R\" .List}}",
            "abc",
        ),
        (
            "eq",
            "{{eq 1 1}} {{eq .Name \"World\"}} {{eq 1 2}}",
            "true true false",
        ),
        (
            "eq multi",
            "{{eq .Name \"a\" \"World\" \"c\"}} {{eq 3 1 2}}",
            "true false",
        ),
        ("eq bool", "{{eq .True true}}", "true"),
        ("ne", "{{ne 1 2}} {{ne \"a\" \"a\"}}", "true false"),
        (
            "lt le",
            "{{lt 1 2}} {{le 2 2}} {{lt 2.5 1.5}}",
            "true true false",
        ),
        (
            "gt ge strings",
            "{{gt \"b\" \"a\"}} {{ge \"a\" \"b\"}}",
            "true false",
        ),
        (
            "and value",
            "{{and 1 0 2}} {{and 1 2}} {{and .Name .Empty}}",
            "0 2 ",
        ),
        ("or value", "{{or 0 \"\" \"x\"}} {{or 0 .False}}", "x false"),
        (
            "and short circuit",
            "{{and .False (index .List 10)}}",
            "false",
        ),
        ("or short circuit", "{{or .One (index .List 10)}}", "1"),
        ("not", "{{not .Empty}} {{not 1}}", "true false"),
        (
            "len",
            "{{len .List}} {{len .Map}} {{len \"h\u{e9}llo\"}}",
            "3 3 6",
        ),
        ("index list", "{{index .List 1}}", "b"),
        ("index map", "{{index .Map \"b\"}}", "2"),
        (
            "index missing map key",
            "{{index .Map \"zz\"}}",
            "<no value>",
        ),
        (
            "index nested",
            "{{index .NetDevs \"eth0\" \"Device\"}}",
            "eth0",
        ),
        ("slice list", "{{slice .List 1 2}}", "[b]"),
        (
            "slice string",
            "{{slice \"abcdef\" 1 3}} {{slice \"abc\" 1}}",
            "bc bc",
        ),
        (
            "print spacing",
            "{{print 1 2}}|{{print \"a\" \"b\"}}|{{print \"a\" 1 2}}",
            "1 2|ab|a1 2",
        ),
        ("println", "{{println \"a\" 1}}", "a 1\n"),
        (
            "print nil",
            "{{print .Missing}} {{print nil}}",
            "<nil> <nil>",
        ),
        (
            "printf ints",
            "{{printf \"%d|%5d|%-5d|%05d|%+d\" 42 42 42 42 42}}",
            "42|   42|42   |00042|+42",
        ),
        (
            "printf strings",
            "{{printf \"%s|%6s|%-6s|%.2s\" \"x\" \"y\" \"z\" \"abc\"}}",
            "x|     y|z     |ab",
        ),
        ("printf quote", "{{printf \"%q\" \"a\\\"b\"}}", "\"a\\\"b\""),
        (
            "printf v",
            "{{printf \"%v %v %v %v\" 1 \"s\" true 1.5}}",
            "1 s true 1.5",
        ),
        (
            "printf v list map",
            "{{printf \"%v %v\" .List .Map}}",
            "[a b c] map[a:1 b:2 c:3]",
        ),
        (
            "printf radix",
            "{{printf \"%x %X %o %b %#x\" 255 255 8 5 255}}",
            "ff FF 10 101 0xff",
        ),
        (
            "printf float",
            "{{printf \"%5.2f|%.3f|%e|%g\" 3.14159 2.0 1234.5678 0.5}}",
            " 3.14|2.000|1.234568e+03|0.5",
        ),
        ("printf hex string", "{{printf \"%x\" \"hi\"}}", "6869"),
        ("printf char", "{{printf \"%c%c\" 72 'i'}}", "Hi"),
        ("printf bool", "{{printf \"%t\" .True}}", "true"),
        ("printf percent", "{{printf \"100%%\"}}", "100%"),
        ("printf missing arg", "{{printf \"%d\"}}", "%!d(MISSING)"),
        (
            "printf bad verb",
            "{{printf \"%d\" \"x\"}}",
            "%!d(string=x)",
        ),
        (
            "printf extra",
            "{{printf \"%s\" \"a\" 2}}",
            "a%!(EXTRA int=2)",
        ),
        ("printf nil", "{{printf \"%v\" .Missing}}", "<nil>"),
        (
            "html",
            "{{html .Html}}",
            "&lt;a href=&#34;x&#34;&gt;&amp;&#39;&lt;/a&gt;",
        ),
        ("js", "{{js \"it's <b>\"}}", "it\\'s \\u003Cb\\u003E"),
        ("urlquery", "{{urlquery \"a b&c=d\"}}", "a+b%26c%3Dd"),
        ("call", "{{call .Add 2 3}}", "5"),
        ("missing key", "{{.Missing}}", "<no value>"),
        ("missing map key", "{{.Map.zz}}", "<no value>"),
        ("missing chain", "{{.Missing.Deeper}}", "<no value>"),
        ("nil value", "{{.Nil}}", "<no value>"),
        ("missing tag", "{{.Tags.nope}}", "<no value>"),
        (
            "method field",
            "{{.NetDevs.eth0.Primary}} {{.NetDevs.ib0.Primary}}",
            "true false",
        ),
        (
            "tristate",
            "{{range .NetDevs}}{{.OnBoot.BoolDefaultTrue}}/{{.OnBoot.Bool}} {{end}}",
            "true/false false/false ",
        ),
        (
            "method list",
            "{{range .ThisNode.FileSystemList}}{{.Format}} {{end}}",
            "ext4 swap xfs ",
        ),
        (
            "variable method",
            "{{range $n, $nd := .NetDevs}}{{if $nd.Primary}}{{$n}}{{end}}{{end}}",
            "eth0",
        ),
        ("print map", "{{.Map}}", "map[a:1 b:2 c:3]"),
        ("print list", "{{.List}}", "[a b c]"),
        ("print float", "{{.Float}}", "1.5"),
        ("print negative", "{{.Neg}}", "-3"),
        (
            "eq missing",
            "{{eq .Missing \"x\"}} {{ne .Tags.nope \"x\"}}",
            "false true",
        ),
        (
            "eq int uint",
            "{{eq 1 (len .List)}} {{lt 2 (len .List)}}",
            "false true",
        ),
        (
            "printf float pad",
            "{{printf \"%08.3f|%x\" -3.14159 -255}}",
            "-003.142|-ff",
        ),
        (
            "printf width bool",
            "{{printf \"%5t|%-7v|\" true \"ab\"}}",
            " true|ab     |",
        ),
        ("html nul", "{{html \"a\\x00b\"}}", "a\u{fffd}b"),
        ("js equals", "{{js \"a=b\"}}", "a\\u003Db"),
        ("with zero decl", "{{with $x := 0}}a{{else}}b{{end}}", "b"),
        ("whitespace kept", "  {{.Name}}  \n", "  World  \n"),
        (
            "multi line",
            "line1\n{{- if .True}}\nline2\n{{- end}}\n",
            "line1\nline2\n",
        ),
    ];
    run_table(table, &RenderEnv::new());
}

#[test]
fn language_errors() {
    let table: &[(&str, &str, &str)] = &[
        (
            "index out of range",
            "{{index .List 10}}",
            "index out of range",
        ),
        (
            "incompatible eq",
            "{{eq 1 \"1\"}}",
            "incompatible types for comparison",
        ),
        (
            "incompatible lt",
            "{{lt 1 \"a\"}}",
            "incompatible types for comparison",
        ),
        (
            "field of string",
            "{{.Name.Foo}}",
            "can't evaluate field Foo",
        ),
        ("no such template", "{{template \"nope\"}}", "nope"),
        ("call error", "{{call .Fail}}", "boom"),
        ("call nil", "{{call .Missing}}", "call of nil"),
        ("eq non-comparable", "{{eq .List .List}}", "non-comparable"),
        ("range over string", "{{range \"ab\"}}{{end}}", "range"),
        (
            "break outside range",
            "{{break}}",
            "{{break}} outside {{range}}",
        ),
        (
            "undefined function",
            "{{nope 1}}",
            "function \"nope\" not defined",
        ),
        ("undefined variable", "{{$x}}", "undefined variable \"$x\""),
        ("unclosed action", "{{.Name", "unclosed action"),
        ("unexpected end", "{{end}}", "unexpected"),
        ("missing end", "{{if .True}}x", "unexpected EOF"),
        ("stray else", "a{{else}}b", "unexpected {{else}}"),
        ("define without end", "{{define \"a\"}}x", "unexpected EOF"),
        (
            "block redefined",
            "{{define \"B\"}}new{{end}}{{block \"B\" .}}old{{end}}",
            "multiple definition of template",
        ),
        (
            "continue outside range",
            "{{if 1}}{{continue}}{{end}}",
            "{{continue}} outside {{range}}",
        ),
        (
            "break in range else",
            "{{range .EmptyList}}{{else}}{{break}}{{end}}",
            "{{break}} outside {{range}}",
        ),
        (
            "variable out of scope",
            "{{if 1}}{{$x := 1}}{{end}}{{$x}}",
            "undefined variable \"$x\"",
        ),
        (
            "variable not in define",
            "{{$x := 1}}{{define \"T\"}}{{$x}}{{end}}",
            "undefined variable",
        ),
        (
            "range var out of scope",
            "{{range $v := .List}}{{end}}{{$v}}",
            "undefined variable",
        ),
    ];
    run_error_table(table, &RenderEnv::new());
}

#[test]
fn parse_errors_name_template_line_and_column() {
    let err = Template::parse("hosts.ww", "line one\n  {{ frob .X }}\n").unwrap_err();
    match &err {
        TemplateError::Parse {
            template,
            line,
            column,
            message,
        } => {
            assert_eq!(template, "hosts.ww");
            assert_eq!(*line, 2);
            assert_eq!(*column, 6);
            assert_eq!(message, "function \"frob\" not defined");
        }
        other => panic!("not a parse error: {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "template hosts.ww:2:6: function \"frob\" not defined"
    );
    let err = Template::parse("x.ww", "a\nb\n{{ if }}").unwrap_err();
    assert!(
        matches!(err, TemplateError::Parse { line: 3, .. }),
        "{err:?}"
    );
    assert_eq!(err.template(), "x.ww");
    let err = Template::parse("t.ww", "{{define \"T\"}}{{ nope }}{{end}}").unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn exec_errors_name_the_template() {
    let t = Template::parse("fail.ww", "{{index .List 10}}").unwrap();
    let err = t.render(&data(), &RenderEnv::new()).unwrap_err();
    assert!(matches!(err, TemplateError::Exec { .. }));
    assert!(
        err.to_string().starts_with("executing template fail.ww: "),
        "{err}"
    );
}

#[test]
fn sprig() {
    let table: &[(&str, &str, &str)] = &[
        ("default empty", "{{default \"x\" .Empty}}", "x"),
        ("default given", "{{default \"x\" .Name}}", "World"),
        ("default zero", "{{default 5 .Zero}}", "5"),
        ("default missing", "{{default \"d\" .Missing}}", "d"),
        ("default piped", "{{.Missing | default \"p\"}}", "p"),
        (
            "default false list",
            "{{default \"d\" .False}}{{default \"e\" .EmptyList}}",
            "de",
        ),
        (
            "empty",
            "{{empty .Empty}} {{empty .Name}} {{empty .Zero}} {{empty .EmptyMap}} {{empty .Missing}} {{empty .List}}",
            "true false true true true false",
        ),
        ("coalesce", "{{coalesce .Empty .Zero .Name}}", "World"),
        ("coalesce none", "{{coalesce .Empty .Zero}}", "<no value>"),
        (
            "ternary",
            "{{ternary \"y\" \"n\" true}} {{ternary \"y\" \"n\" .False}} {{.True | ternary \"y\" \"n\"}}",
            "y n y",
        ),
        ("list", "{{list 1 \"a\" .True}}", "[1 a true]"),
        ("list empty", "{{len (list)}}", "0"),
        (
            "append",
            "{{append .List \"d\"}} {{.List}}",
            "[a b c d] [a b c]",
        ),
        ("push", "{{push (list 1) 2}}", "[1 2]"),
        (
            "join",
            "{{join \",\" .List}} {{join \"-\" .Ints}} {{join \",\" \"solo\"}}",
            "a,b,c 1-2-3-4-5 solo",
        ),
        (
            "join skips nil",
            "{{join \",\" (list \"a\" nil \"b\")}}",
            "a,b",
        ),
        (
            "set returns dict",
            "{{$d := dict \"a\" 1}}{{$d = set $d \"b\" 2}}{{$d}}",
            "map[a:1 b:2]",
        ),
        (
            "unset",
            "{{unset (dict \"a\" 1 \"b\" 2) \"a\"}}",
            "map[b:2]",
        ),
        ("dict", "{{dict \"b\" 2 \"a\" 1}}", "map[a:1 b:2]"),
        ("dict field", "{{(dict \"k\" \"v\").k}}", "v"),
        ("dict odd", "{{dict \"odd\"}}", "map[odd:]"),
        (
            "hasKey",
            "{{hasKey .Map \"a\"}} {{hasKey .Map \"z\"}}",
            "true false",
        ),
        ("keys", "{{keys .Map | sortAlpha}}", "[a b c]"),
        (
            "lower upper",
            "{{lower \"AbC\"}} {{upper \"abc\"}}",
            "abc ABC",
        ),
        (
            "lower in default",
            "{{default \"ethernet\" (lower .NetDevs.ib0.Type)}}",
            "infiniband",
        ),
        ("splitList", "{{splitList \",\" \"a,b,,c\"}}", "[a b  c]"),
        (
            "split",
            "{{$p := split \".\" \"a.b.c\"}}{{$p._0}}-{{$p._2}}",
            "a-c",
        ),
        (
            "regexMatch",
            "{{regexMatch \"^DNS[0-9]*$\" \"DNS1\"}} {{regexMatch \"^DNS[0-9]*$\" \"xDNS\"}}",
            "true false",
        ),
        ("regexMatch invalid", "{{regexMatch \"(\" \"x\"}}", "false"),
        (
            "regexSplit",
            "{{regexSplit \"[ ;]+\" .NetDevs.eth0.Tags.DNSSEARCH -1}}",
            "[a.org b.org]",
        ),
        (
            "regexSplit limit",
            "{{regexSplit \",\" \"a,b,c\" 2}}",
            "[a b,c]",
        ),
        (
            "regexSplit trailing",
            "{{join \";\" (without (regexSplit \"[ ;]+\" \"a; b;\" -1) \"\")}}",
            "a;b",
        ),
        (
            "regexReplaceAll",
            "{{regexReplaceAll \"a(x*)b\" \"-ab-axxb-\" \"${1}W\"}}",
            "-W-xxW-",
        ),
        (
            "regexReplaceAllLiteral",
            "{{regexReplaceAllLiteral \"a(x*)b\" \"-ab-\" \"${1}\"}}",
            "-${1}-",
        ),
        (
            "regexFind",
            "{{regexFind \"[0-9]+\" \"ab123cd45\"}} {{regexFindAll \"[0-9]+\" \"ab123cd45\" -1}}",
            "123 [123 45]",
        ),
        (
            "substr",
            "{{substr 0 5 \"route1\"}} {{substr 1 3 \"abcd\"}} {{substr 0 5 \"abc\"}}",
            "route bc abc",
        ),
        (
            "substr in tag loop",
            "{{range $k, $v := .Tags}}{{if eq (substr 0 5 $k) \"route\"}}{{$k}}={{$v}}{{end}}{{end}}",
            "route1=10.1.0.0/16,10.0.0.1",
        ),
        ("trim", "[{{trim \"  x \\n\"}}]", "[x]"),
        ("trimAll", "{{trimAll \"$\" \"$5.00$\"}}", "5.00"),
        (
            "trimSuffix trimPrefix",
            "{{trimSuffix \".ww\" \"hosts.ww\"}} {{trimPrefix \"/\" \"/etc\"}}",
            "hosts etc",
        ),
        (
            "replace",
            "{{replace \"o\" \"0\" \"foo boo\"}} {{\"a-b\" | replace \"-\" \"_\"}}",
            "f00 b00 a_b",
        ),
        (
            "contains",
            "{{contains \"ell\" \"Hello\"}} {{contains \"x\" \"Hello\"}}",
            "true false",
        ),
        (
            "hasPrefix hasSuffix",
            "{{hasPrefix \"He\" \"Hello\"}} {{hasSuffix \"lo\" \"Hello\"}} {{hasSuffix \"He\" \"Hello\"}}",
            "true true false",
        ),
        (
            "without",
            "{{without .List \"b\"}} {{without .Ints 1 5}}",
            "[a c] [2 3 4]",
        ),
        ("toJson map", "{{toJson .Map}}", "{\"a\":1,\"b\":2,\"c\":3}"),
        (
            "toJson html escape",
            "{{toJson .Html}}",
            "\"\\u003ca href=\\\"x\\\"\\u003e\\u0026'\\u003c/a\\u003e\"",
        ),
        (
            "toJson list float nil",
            "{{toJson .List}} {{toJson .Float}} {{toJson .Nil}} {{toJson .Missing}}",
            "[\"a\",\"b\",\"c\"] 1.5 null null",
        ),
        (
            "toJson nested",
            "{{toJson (dict \"a\" (list 1 true) \"b\" \"x\\ny\")}}",
            "{\"a\":[1,true],\"b\":\"x\\ny\"}",
        ),
        (
            "quote",
            "{{quote \"a\" 1 .True}} {{quote \"x\\\"y\"}}",
            "\"a\" \"1\" \"true\" \"x\\\"y\"",
        ),
        ("squote", "{{squote \"a\" \"b\"}}", "'a' 'b'"),
        ("indent", "{{indent 2 \"a\\nb\"}}", "  a\n  b"),
        ("nindent", "x:{{nindent 2 \"a\"}}", "x:\n  a"),
        (
            "first last",
            "{{first .List}} {{last .List}} {{first .EmptyList}}",
            "a c <no value>",
        ),
        ("uniq", "{{uniq .Dups}}", "[a b c]"),
        (
            "has",
            "{{has \"b\" .List}} {{has \"z\" .List}} {{.List | has \"a\"}} {{has 1 .Nil}}",
            "true false true false",
        ),
        ("cat", "{{cat \"a\" 1 .Nil \"b\"}}", "a 1 b"),
        (
            "join floats",
            "{{join \",\" (list 1.5 1000000.0)}}",
            "1.5,1e+06",
        ),
        (
            "add",
            "{{add 1 2 3}} {{add \"2\" 3}} {{add1 .One}}",
            "6 5 2",
        ),
        ("sub mul", "{{sub 10 4}} {{mul 2 3 4}}", "6 24"),
        ("div mod", "{{div 7 2}} {{div -7 2}} {{mod 7 3}}", "3 -3 1"),
        ("math feeds printf", "{{printf \"%03d\" (add 1 1)}}", "002"),
        (
            "toString atoi int",
            "{{toString 5}} {{add (atoi \"41\") 1}} {{int \"0x10\"}}",
            "5 42 16",
        ),
        (
            "repeat nospace title",
            "{{repeat 3 \"ab\"}} {{nospace \"a b\\tc\"}} {{title \"hello world\"}}",
            "ababab abc Hello World",
        ),
    ];
    run_table(table, &RenderEnv::new());
}

#[test]
fn sprig_errors() {
    let table: &[(&str, &str, &str)] = &[
        ("div by zero", "{{div 1 0}}", "integer divide by zero"),
        ("mod by zero", "{{mod 1 0}}", "integer divide by zero"),
        (
            "lower of int",
            "{{lower 5}}",
            "wrong type for value; expected string; got int",
        ),
        (
            "lower of missing",
            "{{lower .Missing}}",
            "invalid value; expected string",
        ),
        (
            "ternary needs bool",
            "{{ternary \"a\" \"b\" \"x\"}}",
            "expected bool",
        ),
        (
            "bad regex",
            "{{regexSplit \"(\" \"a\" -1}}",
            "error calling regexSplit",
        ),
        (
            "append to nil",
            "{{append .Missing \"x\"}}",
            "Cannot push on type",
        ),
        (
            "substr bad range",
            "{{substr 3 1 \"abcd\"}}",
            "slice bounds out of range",
        ),
        (
            "join arity",
            "{{join \",\"}}",
            "wrong number of args for join",
        ),
        ("hasKey of list", "{{hasKey .List \"a\"}}", "expected map"),
    ];
    run_error_table(table, &RenderEnv::new());
}

#[test]
fn warewulf_functions() {
    let site = Site::new();
    let table: &[(&str, &str, &str)] = &[
        (
            "Include trims one newline",
            "{{Include \"/etc/hosts\"}}",
            "127.0.0.1 localhost\n10.0.0.1 head",
        ),
        (
            "Include keeps inner newline",
            "{{Include \"/etc/motd\"}}|",
            "hello\n|",
        ),
        ("Include no eol", "{{Include \"/etc/noeol\"}}", "no newline"),
        (
            "Include relative to sysconfdir",
            "{{Include \"site.conf\"}}",
            "site=1",
        ),
        ("Include missing", "[{{Include \"/nonexistent\"}}]", "[]"),
        (
            "Include dotdot stays in root",
            "{{Include \"/../../etc/noeol\"}}",
            "no newline",
        ),
        (
            "IncludeFrom",
            "{{IncludeFrom \"rocky\" \"/etc/passwd\"}}",
            "root:x:0:0::/root:/bin/bash",
        ),
        (
            "IncludeFrom unknown image",
            "[{{IncludeFrom \"nope\" \"/etc/passwd\"}}]",
            "[]",
        ),
        (
            "IncludeFrom no image",
            "[{{IncludeFrom \"\" \"/etc/passwd\"}}]",
            "[]",
        ),
        (
            "IncludeFrom directory",
            "[{{IncludeFrom \"rocky\" \"/etc\"}}]",
            "[]",
        ),
        (
            "IncludeBlock",
            "{{IncludeBlock \"/etc/block\" \"# Do not edit\"}}",
            "keep 1\nkeep 2\n# Do not edit",
        ),
        (
            "IncludeBlock no marker",
            "{{IncludeBlock \"/etc/hosts\" \"MARK\"}}",
            "127.0.0.1 localhost\n10.0.0.1 head\nMARK",
        ),
        (
            "IncludeBlock missing",
            "{{IncludeBlock \"/nope\" \"MARK\"}}",
            "MARK",
        ),
        (
            "basename",
            "{{basename \"/usr/lib/ipxe/undionly.kpxe\"}} {{basename \"/a/b/\"}} {{basename \"\"}}",
            "undionly.kpxe b .",
        ),
        (
            "inc dec",
            "{{inc 1}} {{dec 1}} {{range $i, $v := .List}}{{inc $i}}{{end}}",
            "2 0 123",
        ),
        (
            "readlink",
            "{{readlink \"/etc/localtime\"}}",
            "/usr/share/zoneinfo/Europe/Berlin",
        ),
        (
            "readlink plain file",
            "{{readlink \"/etc/hosts\"}}",
            "/etc/hosts",
        ),
        ("IgnitionJson", "{{IgnitionJson}}", "{\"node\":\"n1\"}"),
        (
            "UniqueField",
            "{{UniqueField \":\" 0 .Passwd}}",
            "root:x:0\nbin:x:1\nadm:x:3",
        ),
        (
            "UniqueField piped",
            "{{.Passwd | UniqueField \":\" 2}}",
            "root:x:0\nbin:x:1\nadm:x:3",
        ),
        (
            "SystemdEscape",
            "{{SystemdEscape \"a b/c-d\"}} {{SystemdEscape \".hidden\"}}",
            "a\\x20b-c\\x2dd \\x2ehidden",
        ),
        (
            "SystemdEscapePath",
            "{{.Path | SystemdEscapePath}} {{SystemdEscapePath \"/\"}} {{SystemdEscapePath \"//x//y//\"}}",
            "var-lib-foo\\x2dbar - x-y",
        ),
        ("tr", "{{tr \"a.b.c\" \".\" \"-\"}}", "a-b-c"),
        (
            "ImportLink missing is literal abort",
            "{{ImportLink \"/nope\"}}",
            "abort",
        ),
        ("file marker text", "{{file \"x\" | len}}", "20"),
    ];
    run_table(table, &site.env());
    run_error_table(
        &[
            (
                "readlink missing",
                "{{readlink \"/nope\"}}",
                "error calling readlink: lstat /nope: no such file or directory",
            ),
            ("inc of string", "{{inc \"1\"}}", "expected int; got string"),
            (
                "UniqueField negative",
                "{{UniqueField \":\" -1 \"a\"}}",
                "index out of range",
            ),
        ],
        &site.env(),
    );
}

fn render_site(src: &str, data: &Value, site: &Site) -> Rendered {
    Template::parse("case.ww", src)
        .unwrap()
        .render(data, &site.env())
        .unwrap()
}

fn summary(r: &Rendered) -> Vec<(Option<String>, String, OutputKind, bool)> {
    r.outputs
        .iter()
        .map(|o| {
            (
                o.name.clone(),
                String::from_utf8(o.content.clone()).unwrap(),
                o.kind.clone(),
                o.backup,
            )
        })
        .collect()
}

fn normal(name: Option<&str>, content: &str) -> (Option<String>, String, OutputKind, bool) {
    (
        name.map(str::to_string),
        content.to_string(),
        OutputKind::Normal,
        true,
    )
}

#[test]
fn file_starts_new_outputs() {
    let site = Site::new();
    let src = "{{- range .List }}\n{{ file (print \"out-\" .) }}\ncontent {{ . }}\n{{- end }}\n";
    let r = render_site(src, &data(), &site);
    assert_eq!(
        summary(&r),
        [
            // The blank line before the first marker opens the first file.
            normal(Some("out-a"), "\ncontent a\n"),
            normal(Some("out-b"), "content b\n"),
            normal(Some("out-c"), "content c\n"),
        ]
    );
}

#[test]
fn file_marker_line_is_dropped_whole() {
    let site = Site::new();
    let r = render_site("a\nbefore {{ file \"x\" }} after\nb\n", &data(), &site);
    assert_eq!(summary(&r), [normal(Some("x"), "a\nb\n")]);
}

#[test]
fn file_absolute_and_relative_names_are_kept_raw() {
    let site = Site::new();
    let r = render_site(
        "{{file \"/etc/abs\"}}\nA\n{{file \"../rel\"}}\nB",
        &data(),
        &site,
    );
    assert_eq!(
        summary(&r),
        [normal(Some("/etc/abs"), "A\n"), normal(Some("../rel"), "B")]
    );
}

#[test]
fn softlink_makes_a_symlink() {
    let site = Site::new();
    let r = render_site(
        "{{ printf \"%s/%s\" \"/usr/share/zoneinfo\" \"UTC\" | softlink }}\n",
        &data(),
        &site,
    );
    assert_eq!(
        summary(&r),
        [(
            None,
            String::new(),
            OutputKind::Symlink("/usr/share/zoneinfo/UTC".into()),
            true
        )]
    );
}

#[test]
fn softlinks_paired_with_file() {
    let site = Site::new();
    let src = "{{ file \"/tmp/test-link1\"}}\n{{ softlink \"/tmp/test-target1\" }}\n{{ file \"/tmp/test-link2\"}}\n{{ softlink \"/tmp/test-target2\" }}\n";
    let r = render_site(src, &data(), &site);
    let kinds: Vec<(Option<String>, OutputKind)> = r
        .outputs
        .iter()
        .map(|o| (o.name.clone(), o.kind.clone()))
        .collect();
    assert_eq!(
        kinds,
        [
            (
                Some("/tmp/test-link1".into()),
                OutputKind::Symlink("/tmp/test-target1".into())
            ),
            (
                Some("/tmp/test-link2".into()),
                OutputKind::Symlink("/tmp/test-target2".into())
            ),
        ]
    );
}

#[test]
fn text_after_softlink_carries_into_next_file() {
    let site = Site::new();
    let src = "{{file \"l\"}}\n{{softlink \"t\"}}\nstray\n{{file \"f\"}}\nbody\n";
    let r = render_site(src, &data(), &site);
    assert_eq!(
        summary(&r),
        [
            (
                Some("l".into()),
                String::new(),
                OutputKind::Symlink("t".into()),
                true
            ),
            normal(Some("f"), "stray\nbody\n"),
        ]
    );
}

#[test]
fn import_link_copies_the_link_target_and_records_it() {
    let site = Site::new();
    let r = render_site("{{ ImportLink \"/etc/localtime\" }}", &data(), &site);
    assert_eq!(
        r.outputs[0].kind,
        OutputKind::Symlink("/usr/share/zoneinfo/Europe/Berlin".into())
    );
    assert_eq!(r.files_read, [site.root().join("etc/localtime")]);
}

#[test]
fn abort_discards_everything() {
    let site = Site::new();
    for src in [
        "a{{ abort }}b",
        "{{file \"x\"}}\nX\n{{abort}}",
        "{{if true}}{{abort}}{{end}}",
    ] {
        let r = render_site(src, &data(), &site);
        assert!(r.aborted(), "{src}");
        assert_eq!(r.outputs.len(), 1);
        assert_eq!(r.outputs[0].kind, OutputKind::Abort);
        assert!(r.outputs[0].content.is_empty());
    }
}

#[test]
fn nobackup_applies_to_every_output() {
    let site = Site::new();
    let r = render_site("x{{ nobackup }}", &data(), &site);
    assert_eq!(summary(&r), [(None, "x".into(), OutputKind::Normal, false)]);
    let r = render_site(
        "{{file \"a\"}}\nA\n{{file \"b\"}}\nB{{nobackup}}",
        &data(),
        &site,
    );
    assert!(r.outputs.iter().all(|o| !o.backup));
    let r = render_site("x", &data(), &site);
    assert!(r.outputs[0].backup);
}

#[test]
fn includes_are_recorded_once_in_order() {
    let site = Site::new();
    let src = "{{Include \"/etc/hosts\"}}{{Include \"site.conf\"}}{{Include \"/missing\"}}{{Include \"/etc/hosts\"}}{{IncludeFrom \"rocky\" \"/etc/passwd\"}}{{IncludeBlock \"/etc/block\" \"x\"}}{{readlink \"/etc/localtime\"}}";
    let r = render_site(src, &data(), &site);
    let root = site.root();
    assert_eq!(
        r.files_read,
        [
            root.join("etc/hosts"),
            root.join("etc/warewulf/site.conf"),
            root.join("missing"),
            site.dir.path().join("images/rocky/rootfs/etc/passwd"),
            root.join("etc/block"),
            root.join("etc/localtime"),
        ]
    );
    // A render that reads nothing records nothing.
    let r = render_site("{{.Name}}", &data(), &site);
    assert!(r.files_read.is_empty());
}

#[test]
fn renders_do_not_share_state() {
    let site = Site::new();
    let t = Template::parse(
        "t.ww",
        "{{if eq .Name \"World\"}}{{abort}}{{nobackup}}{{end}}ok",
    )
    .unwrap();
    assert!(t.render(&data(), &site.env()).unwrap().aborted());
    let other = Value::object().field("Name", "x").build();
    let r = t.render(&other, &site.env()).unwrap();
    assert_eq!(summary(&r), [normal(None, "ok")]);
}

/// Mount units in the style of Warewulf's `systemd.mount` overlay: one
/// `file` per local file system, `abort` when there is none.
const MOUNT_UNITS: &str = r#"{{- $none := true }}
{{- range $fs := .ThisNode.FileSystemList }}
{{-   if and $fs.Path (ne $fs.Format "swap") }}
{{-     $none = false }}
{{ file (printf "%s.mount" ($fs.Path | SystemdEscapePath)) }}
# generated for {{ $.Id }}
[Mount]
What={{ $fs.Id }}
Where={{ $fs.Path }}
Type={{ $fs.Format }}
{{-   end }}
{{- end }}
{{- if $none }}{{ abort }}{{ end }}
"#;

#[test]
fn golden_mount_units() {
    let site = Site::new();
    let r = render_site(MOUNT_UNITS, &data(), &site);
    let unit = |path: &str, fmt: &str| {
        format!(
            "# generated for n1\n[Mount]\nWhat=/dev/disk/by-partlabel/{fmt}\nWhere={path}\nType={fmt}\n"
        )
    };
    assert_eq!(
        summary(&r),
        [
            // The blank line before the first marker opens the first file.
            normal(
                Some("scratch.mount"),
                &format!("\n{}", unit("/scratch", "ext4"))
            ),
            normal(Some("var-tmp\\x2dx.mount"), &unit("/var/tmp-x", "xfs")),
        ]
    );
    let bare = Value::object()
        .field(
            "ThisNode",
            Value::object().field("FileSystemList", Value::list(Vec::<Value>::new())),
        )
        .build();
    assert!(render_site(MOUNT_UNITS, &bare, &site).aborted());
}

/// Per-interface files in the style of Warewulf's network overlays.
const IFCFG_LIKE: &str = r#"{{- range $name, $dev := .NetDevs }}
{{ file (print "ifcfg-" $name) }}
NAME={{ $name }}
KIND={{ default "ethernet" (lower $dev.Type) }}
ONBOOT={{ $dev.OnBoot.BoolDefaultTrue }}
{{- $servers := "" }}
{{- range $k, $v := $dev.Tags }}
{{-   if regexMatch "^DNS[0-9]+$" $k }}{{ $servers = printf "%s%s," $servers $v }}{{ end }}
{{- end }}
{{- with $servers }}
SERVERS={{ trimSuffix "," . }}
{{- end }}
{{- if $dev.Tags.DNSSEARCH }}
SEARCH={{ join " " (without (regexSplit "[ ;]+" $dev.Tags.DNSSEARCH -1) "") }}
{{- end }}
{{- end }}
"#;

#[test]
fn golden_ifcfg_like() {
    let site = Site::new();
    let r = render_site(IFCFG_LIKE, &data(), &site);
    assert_eq!(
        summary(&r),
        [
            normal(
                Some("ifcfg-eth0"),
                "\nNAME=eth0\nKIND=ethernet\nONBOOT=true\nSERVERS=1.1.1.1,8.8.8.8\nSEARCH=a.org b.org\n"
            ),
            normal(
                Some("ifcfg-ib0"),
                "NAME=ib0\nKIND=infiniband\nONBOOT=false\n"
            ),
        ]
    );
}

#[test]
fn parse_once_render_concurrently() {
    let t = std::sync::Arc::new(
        Template::parse("hosts.ww", "{{range .Hosts}}{{.}} {{.| upper}}\n{{end}}").unwrap(),
    );
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let t = std::sync::Arc::clone(&t);
            std::thread::spawn(move || {
                let hosts: Vec<String> = (0..50).map(|h| format!("n{i}-{h}")).collect();
                let data = Value::object().field("Hosts", hosts.clone()).build();
                for _ in 0..20 {
                    let r = t.render(&data, &RenderEnv::new()).unwrap();
                    let want: String = hosts
                        .iter()
                        .map(|h| format!("{h} {}\n", h.to_uppercase()))
                        .collect();
                    assert_eq!(text(&r), want);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn value_conversions() {
    let v = Value::from(
        serde_json::json!({"n": 1, "u": u64::MAX, "f": 0.25, "s": "x", "b": false, "l": [1], "z": null}),
    );
    let t = Template::parse("v", "{{.n}} {{.u}} {{.f}} {{.s}} {{.b}} {{.l}} {{.z}}").unwrap();
    let r = t.render(&v, &RenderEnv::new()).unwrap();
    assert_eq!(
        text(&r),
        "1 18446744073709551615 0.25 x false [1] <no value>"
    );
    let o = Value::object()
        .field_opt("Set", Some("y"))
        .field_opt("Unset", None::<&str>)
        .field("Opt", None::<i64>)
        .build();
    let t = Template::parse("o", "{{.Set}} {{.Unset}} {{.Opt}}").unwrap();
    assert_eq!(
        text(&t.render(&o, &RenderEnv::new()).unwrap()),
        "y <no value> <no value>"
    );
    assert!(Value::nil().is_nil());
    assert_eq!(Value::from(3u8).as_i64(), Some(3));
    assert_eq!(Value::from(true).as_bool(), Some(true));
    assert!(Value::from("a").is_truthy() && !Value::from("").is_truthy());
}

#[test]
fn render_text_keeps_markers() {
    let t = Template::parse("t", "{{file \"a\"}}\nA").unwrap();
    let s = t.render_text(&data(), &RenderEnv::new()).unwrap();
    assert_eq!(s, "{{ /* file \"a\" */ }}\nA");
}

#[test]
fn only_defines_and_whitespace() {
    let t = Template::parse("t", "{{define \"x\"}}X{{end}}\n").unwrap();
    assert_eq!(text(&t.render(&data(), &RenderEnv::new()).unwrap()), "\n");
}

#[test]
fn from_file_uses_base_name() {
    let site = Site::new();
    let path = site.root().join("etc/hosts.ww");
    std::fs::write(&path, "{{ .Id }} {{ nope }}").unwrap();
    let err = Template::from_file(&path).unwrap_err();
    assert_eq!(err.template(), "hosts.ww");
    std::fs::write(&path, "{{ .Id }}").unwrap();
    let t = Template::from_file(&path).unwrap();
    assert_eq!(t.name(), "hosts.ww");
    assert_eq!(text(&t.render(&data(), &RenderEnv::new()).unwrap()), "n1");
    let err = Template::from_file(&site.root().join("missing.ww")).unwrap_err();
    assert!(matches!(err, TemplateError::Read { .. }), "{err:?}");
}

/// Rough throughput check (`--ignored`): a typical template for many nodes.
#[test]
#[ignore = "timing only"]
fn throughput() {
    let t = Template::parse("ifcfg.ww", IFCFG_LIKE).unwrap();
    let d = data();
    let env = RenderEnv::new();
    let start = std::time::Instant::now();
    let n = 2000;
    for _ in 0..n {
        t.render(&d, &env).unwrap();
    }
    let per = start.elapsed() / n;
    println!("{per:?} per render");
}

/// Builds a list of dictionaries with an in-place `set`, as Warewulf's
/// sfdisk and mkfs overlays do.
const DISK_LIST: &str = r#"{{- $parts := list }}
{{- range $d := .Disks }}
{{-   $entry := dict "dev" $d.Id }}
{{-   if $d.WipeTable }}{{ $_ := set $entry "mode" "always" }}{{ end }}
{{-   $parts = append $parts $entry }}
{{- end }}
{{- range $i, $p := $parts }}
wipe {{ $p.dev }} {{ default "auto" $p.mode }} #{{ $i }}
{{- end }}
"#;

#[test]
fn sprig_set_changes_the_dictionary_in_place() {
    let table: &[(&str, &str, &str)] = &[
        (
            "set via blank",
            "{{$d := dict \"a\" 1}}{{$_ := set $d \"b\" 2}}{{$d}}",
            "map[a:1 b:2]",
        ),
        (
            "set in nested scope",
            "{{$d := dict}}{{if true}}{{$_ := set $d \"k\" \"v\"}}{{end}}{{$d.k}}",
            "v",
        ),
        (
            "set field path",
            "{{$d := dict \"in\" (dict)}}{{$_ := set $d.in \"k\" \"v\"}}{{$d.in.k}}",
            "v",
        ),
        (
            "set printed",
            "{{$d := dict}}{{set $d \"k\" \"v\"}}",
            "map[k:v]",
        ),
        (
            "set piped",
            "{{$d := dict}}{{\"v\" | set $d \"k\"}}|{{$d.k}}",
            "map[k:v]|v",
        ),
        (
            "set result",
            "{{$d := dict}}{{$r := set $d \"k\" 1}}{{$r.k}} {{$d.k}}",
            "1 1",
        ),
        (
            "unset",
            "{{$d := dict \"a\" 1 \"b\" 2}}{{$_ := unset $d \"a\"}}{{$d}}",
            "map[b:2]",
        ),
        (
            "set in range",
            "{{$d := dict}}{{range .List}}{{$_ := set $d . 1}}{{end}}{{keys $d}}",
            "[a b c]",
        ),
    ];
    run_table(table, &RenderEnv::new());

    let disk = |id: &str, wipe: bool| {
        Value::object()
            .field("Id", id)
            .field("WipeTable", wipe)
            .build()
    };
    let node = Value::object()
        .field(
            "Disks",
            Value::list([disk("/dev/sda", true), disk("/dev/sdb", false)]),
        )
        .build();
    let t = Template::parse("disks.ww", DISK_LIST).unwrap();
    let r = t.render(&node, &RenderEnv::new()).unwrap();
    assert_eq!(
        text(&r),
        "\nwipe /dev/sda always #0\nwipe /dev/sdb auto #1\n"
    );
}
