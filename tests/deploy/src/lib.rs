//! Checks for `deploy/`: renders the kustomize overlays (`kubectl kustomize`)
//! and the Helm chart, validates every object against the Kubernetes
//! OpenAPI schemas (kubernetes-validate, strict, offline) and compares the
//! chart with the plain manifests object by object.
//!
//! No `helm` installs on the CI machines (not in Debian 12; the PyPI
//! wrappers need a newer Python), so [`chart`] is a deliberately tiny
//! evaluator of Go templates: it supports only what the chart's templates
//! use and fails loudly on anything else, which keeps the templates
//! trivially equivalent to the manifests. Supported:
//!
//! - text, `{{- ` / ` -}}` whitespace trimming, `{{/* comments */}}`;
//! - `{{ define "name" }}…{{ end }}` and `include "name" .`;
//! - `{{ if P }}…{{ else }}…{{ end }}` (Go's truthiness: false, 0, "", empty
//!   list or map, null are false);
//! - terms `.Values.a.b`, `.Release.Name|Namespace|Service`,
//!   `.Chart.Name|Version|AppVersion`, `"string"`, `toYaml TERM`;
//! - pipes `| quote` and `| nindent N`.
//!
//! A value that is missing from the values is an error, not Helm's
//! `<no value>`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::{Map, Value};

pub type Error = String;

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// Every YAML document of `text` that is not empty.
pub fn parse_docs(text: &str) -> Result<Vec<Value>, Error> {
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let value = Value::deserialize(doc).map_err(|e| format!("YAML: {e}"))?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// `kubectl kustomize DIR` (or `$DEVSIEVE_KUBECTL kustomize DIR`).
pub fn kustomize(dir: &Path) -> Result<Vec<Value>, Error> {
    let kubectl = std::env::var("DEVSIEVE_KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let out =
        Command::new(&kubectl).arg("kustomize").arg(dir).output().map_err(|e| {
            format!("{kubectl} kustomize {}: {e} (bash .ci/setup --tests installs kubectl)", dir.display())
        })?;
    if !out.status.success() {
        return Err(format!("{kubectl} kustomize {} failed: {}", dir.display(), String::from_utf8_lossy(&out.stderr)));
    }
    parse_docs(&String::from_utf8_lossy(&out.stdout))
}

pub const VERSIONS: [&str; 5] = ["1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0"];

/// Validates `objects` with kubernetes-validate (strict) for each version:
/// one entry per object, the errors (`version: message`), empty when valid.
pub fn validate(objects: &[Value], versions: &[&str]) -> Result<Vec<Vec<String>>, Error> {
    let repo = repo();
    let dir = std::env::temp_dir().join(format!("devsieve-deploy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let file = dir.join(format!("objects-{}.json", objects.as_ptr() as usize));
    std::fs::write(&file, serde_json::to_vec(objects).unwrap()).map_err(|e| e.to_string())?;
    let python_path = repo.join("target/tools/python");
    let mut path = python_path.into_os_string();
    if let Some(old) = std::env::var_os("PYTHONPATH") {
        path.push(":");
        path.push(old);
    }
    let out = Command::new("python3")
        .arg(repo.join("tests/deploy/validate.py"))
        .arg(&file)
        .args(versions)
        .env("PYTHONPATH", path)
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    let _ = std::fs::remove_file(&file);
    if !out.status.success() {
        return Err(format!(
            "kubernetes-validate did not run (bash .ci/setup --tests installs it in target/tools/python): {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut errors = vec![Vec::new(); objects.len()];
    let mut seen = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let r: Value = serde_json::from_str(line).map_err(|e| format!("validate.py: {e}: {line}"))?;
        seen += 1;
        if let Some(e) = r["error"].as_str() {
            errors[r["index"].as_u64().unwrap() as usize].push(format!("{}: {e}", r["version"].as_str().unwrap()));
        }
    }
    if seen != objects.len() * versions.len() {
        return Err(format!("validate.py answered {seen} times for {} objects", objects.len()));
    }
    Ok(errors)
}

/// `Kind/namespace/name` of an object.
pub fn id(obj: &Value) -> String {
    format!(
        "{}/{}/{}/{}",
        obj["apiVersion"].as_str().unwrap_or("?"),
        obj["kind"].as_str().unwrap_or("?"),
        obj["metadata"]["namespace"].as_str().unwrap_or(""),
        obj["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// What the comparison of the chart with the manifests ignores, and nothing
/// else: Helm's own labels on objects (`app.kubernetes.io/managed-by`,
/// `helm.sh/chart`), the order of lists whose items are named (env,
/// volumes, mounts, ports: Kubernetes merges them by name; kustomize
/// versions order a patched item differently), and the text of the config
/// (compared as the YAML it parses to).
pub fn normalize(obj: &Value) -> Value {
    let mut obj = obj.clone();
    if let Some(labels) = obj.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        labels.remove("app.kubernetes.io/managed-by");
        labels.remove("helm.sh/chart");
    }
    if obj["kind"] == "ConfigMap"
        && let Some(text) = obj.pointer("/data/config.yaml").and_then(Value::as_str)
    {
        let parsed = parse_docs(text).expect("config.yaml").into_iter().next().unwrap_or(Value::Null);
        obj["data"]["config.yaml"] = parsed;
    }
    sort_named(&mut obj);
    obj
}

fn sort_named(v: &mut Value) {
    match v {
        Value::Array(items) => {
            items.iter_mut().for_each(sort_named);
            if !items.is_empty() && items.iter().all(|i| i.get("name").is_some_and(Value::is_string)) {
                items.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
            }
        }
        Value::Object(map) => map.values_mut().for_each(sort_named),
        _ => {}
    }
}

/// The first place where `a` and `b` differ, as a JSON pointer with both values.
pub fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys()) {
                let p = format!("{path}/{k}");
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => {
                        if let Some(d) = first_difference(va, vb, &p) {
                            return Some(d);
                        }
                    }
                    (va, vb) => return Some(format!("{p}: {va:?} vs {vb:?}")),
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().find_map(|(i, (va, vb))| first_difference(va, vb, &format!("{path}/{i}")))
        }
        _ if a == b => None,
        _ => Some(format!("{path}: {a} vs {b}")),
    }
}

/// Objects keyed by [`id`], normalized; duplicates are an error.
pub fn by_id(objects: &[Value]) -> Result<BTreeMap<String, Value>, Error> {
    let mut map = BTreeMap::new();
    for o in objects {
        if map.insert(id(o), normalize(o)).is_some() {
            return Err(format!("{} twice", id(o)));
        }
    }
    Ok(map)
}

pub mod chart {
    //! The tiny template evaluator (see the crate's documentation).
    use super::*;

    #[derive(Debug, Clone)]
    enum Node {
        Text(String),
        Expr(String),
        If(String, Vec<Node>, Vec<Node>),
    }

    #[derive(Debug)]
    struct Token {
        text: String,
        action: bool,
        trim_left: bool,
        trim_right: bool,
    }

    fn tokenize(src: &str, file: &str) -> Result<Vec<Token>, Error> {
        let mut tokens = Vec::new();
        let mut rest = src;
        while let Some(start) = rest.find("{{") {
            tokens.push(Token { text: rest[..start].to_string(), action: false, trim_left: false, trim_right: false });
            let mut inner = &rest[start + 2..];
            let trim_left = inner.starts_with("- ") || inner.starts_with("-\n");
            if trim_left {
                inner = &inner[1..];
            }
            let trimmed = inner.trim_start();
            let end = if trimmed.starts_with("/*") {
                let close = inner.find("*/").ok_or_else(|| format!("{file}: unterminated comment"))?;
                close + inner[close..].find("}}").ok_or_else(|| format!("{file}: unterminated action"))?
            } else {
                inner.find("}}").ok_or_else(|| format!("{file}: unterminated action"))?
            };
            let mut body = &inner[..end];
            let trim_right = body.ends_with(" -") || body.ends_with("\n-");
            if trim_right {
                body = &body[..body.len() - 1];
            }
            let body = body.trim();
            if !body.starts_with("/*") {
                tokens.push(Token { text: body.to_string(), action: true, trim_left, trim_right });
            } else if !body.ends_with("*/") {
                return Err(format!("{file}: bad comment {body:?}"));
            } else {
                // A comment still trims.
                tokens.push(Token { text: String::new(), action: true, trim_left, trim_right });
            }
            rest = &inner[end + 2..];
        }
        tokens.push(Token { text: rest.to_string(), action: false, trim_left: false, trim_right: false });
        // Apply trimming to the neighbouring text.
        for i in 0..tokens.len() {
            if tokens[i].action {
                if tokens[i].trim_left && i > 0 {
                    tokens[i - 1].text = tokens[i - 1].text.trim_end().to_string();
                }
                if tokens[i].trim_right && i + 1 < tokens.len() {
                    tokens[i + 1].text = tokens[i + 1].text.trim_start().to_string();
                }
            }
        }
        Ok(tokens.into_iter().filter(|t| t.action || !t.text.is_empty()).collect())
    }

    /// Parses until `else`/`end` (returned) or the end of input.
    fn parse(
        tokens: &mut std::iter::Peekable<std::vec::IntoIter<Token>>,
        defines: &mut BTreeMap<String, Vec<Node>>,
        file: &str,
    ) -> Result<(Vec<Node>, Option<String>), Error> {
        let mut nodes = Vec::new();
        while let Some(t) = tokens.next() {
            if !t.action {
                nodes.push(Node::Text(t.text));
                continue;
            }
            let a = t.text.as_str();
            if a.is_empty() {
                continue;
            } else if a == "end" || a == "else" {
                return Ok((nodes, Some(a.to_string())));
            } else if let Some(cond) = a.strip_prefix("if ") {
                let (then, stop) = parse(tokens, defines, file)?;
                let otherwise = match stop.as_deref() {
                    Some("else") => match parse(tokens, defines, file)? {
                        (o, Some(e)) if e == "end" => o,
                        _ => return Err(format!("{file}: `if {cond}`: else without end")),
                    },
                    Some("end") => Vec::new(),
                    _ => return Err(format!("{file}: `if {cond}` without end")),
                };
                nodes.push(Node::If(cond.trim().to_string(), then, otherwise));
            } else if let Some(name) = a.strip_prefix("define ") {
                let name = unquote(name.trim()).ok_or_else(|| format!("{file}: define {name}"))?;
                match parse(tokens, defines, file)? {
                    (body, Some(e)) if e == "end" => {
                        defines.insert(name, body);
                    }
                    _ => return Err(format!("{file}: define {name} without end")),
                }
            } else {
                let word = a.split_whitespace().next().unwrap_or("");
                if ["range", "with", "template", "block", "break", "continue"].contains(&word) || a.contains(":=") {
                    return Err(format!("{file}: unsupported construct {{{{ {a} }}}}"));
                }
                nodes.push(Node::Expr(a.to_string()));
            }
        }
        Ok((nodes, None))
    }

    fn unquote(s: &str) -> Option<String> {
        let s = s.strip_prefix('"')?.strip_suffix('"')?;
        (!s.contains(['"', '\\'])).then(|| s.to_string())
    }

    /// A chart: its templates, helpers, values and metadata.
    #[derive(Debug)]
    pub struct Chart {
        templates: Vec<(String, Vec<Node>)>,
        defines: BTreeMap<String, Vec<Node>>,
        chart: Value,
        pub values: Value,
    }

    fn load_yaml(path: &Path) -> Result<Value, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(parse_docs(&text)?.into_iter().next().unwrap_or(Value::Object(Map::new())))
    }

    /// Helm's merge of a values file over the defaults: maps merge, anything else replaces.
    pub fn merge(base: &mut Value, over: &Value) {
        match (base, over) {
            (Value::Object(b), Value::Object(o)) => {
                for (k, v) in o {
                    match b.get_mut(k) {
                        Some(bv) => merge(bv, v),
                        None => {
                            b.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            (b, o) => *b = o.clone(),
        }
    }

    impl Chart {
        pub fn load(dir: &Path) -> Result<Chart, Error> {
            let mut defines = BTreeMap::new();
            let mut templates = Vec::new();
            let mut entries: Vec<_> = std::fs::read_dir(dir.join("templates"))
                .map_err(|e| e.to_string())?
                .map(|e| e.unwrap().path())
                .collect();
            entries.sort();
            for path in entries {
                let file = path.file_name().unwrap().to_string_lossy().to_string();
                let src = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
                let mut tokens = tokenize(&src, &file)?.into_iter().peekable();
                let (nodes, stop) = parse(&mut tokens, &mut defines, &file)?;
                if let Some(stop) = stop {
                    return Err(format!("{file}: stray {stop}"));
                }
                if !file.starts_with('_') {
                    templates.push((file, nodes));
                }
            }
            Ok(Chart {
                templates,
                defines,
                chart: load_yaml(&dir.join("Chart.yaml"))?,
                values: load_yaml(&dir.join("values.yaml"))?,
            })
        }

        /// Every template rendered with the defaults and `values_file`
        /// merged over them: (file, text). NOTES.txt included.
        pub fn render(&self, values_file: Option<&Path>, namespace: &str) -> Result<Vec<(String, String)>, Error> {
            let mut values = self.values.clone();
            if let Some(f) = values_file {
                merge(&mut values, &load_yaml(f)?);
            }
            let ctx = Ctx { chart: self, values, namespace: namespace.to_string() };
            self.templates
                .iter()
                .map(|(file, nodes)| Ok((file.clone(), ctx.eval(nodes).map_err(|e| format!("{file}: {e}"))?)))
                .collect()
        }

        /// The objects the chart renders (NOTES.txt rendered, then left out).
        pub fn objects(&self, values_file: Option<&Path>, namespace: &str) -> Result<Vec<Value>, Error> {
            let mut objects = Vec::new();
            for (file, text) in self.render(values_file, namespace)? {
                if file.ends_with(".yaml") {
                    objects.extend(parse_docs(&text).map_err(|e| format!("{file}: {e}\n{text}"))?);
                }
            }
            Ok(objects)
        }
    }

    struct Ctx<'a> {
        chart: &'a Chart,
        values: Value,
        namespace: String,
    }

    fn truthy(v: &Value) -> bool {
        match v {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(m) => !m.is_empty(),
        }
    }

    fn print(v: &Value) -> Result<String, Error> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Bool(_) | Value::Number(_) => Ok(v.to_string()),
            _ => Err(format!("cannot print {v} (use toYaml)")),
        }
    }

    impl Ctx<'_> {
        fn eval(&self, nodes: &[Node]) -> Result<String, Error> {
            let mut out = String::new();
            for n in nodes {
                match n {
                    Node::Text(t) => out.push_str(t),
                    Node::Expr(e) => out.push_str(&print(&self.pipeline(e)?)?),
                    Node::If(c, then, otherwise) => {
                        out.push_str(&self.eval(if truthy(&self.pipeline(c)?) { then } else { otherwise })?)
                    }
                }
            }
            Ok(out)
        }

        fn pipeline(&self, expr: &str) -> Result<Value, Error> {
            let mut stages = expr.split('|').map(str::trim);
            let mut v = self.term(stages.next().unwrap())?;
            for stage in stages {
                let words: Vec<_> = stage.split_whitespace().collect();
                v = match words.as_slice() {
                    ["quote"] => {
                        let s = print(&v)?;
                        if !s.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
                            return Err(format!("quote: {s:?} needs Go's escaping, not supported"));
                        }
                        Value::String(serde_json::to_string(&s).unwrap())
                    }
                    ["nindent", n] => {
                        let pad = " ".repeat(n.parse().map_err(|_| format!("nindent {n}"))?);
                        let s = print(&v)?;
                        Value::String(format!("\n{pad}{}", s.replace('\n', &format!("\n{pad}"))))
                    }
                    _ => return Err(format!("unsupported function `{stage}` in {{{{ {expr} }}}}")),
                };
            }
            Ok(v)
        }

        fn term(&self, term: &str) -> Result<Value, Error> {
            let words: Vec<_> = term.split_whitespace().collect();
            match words.as_slice() {
                ["include", name, "."] => {
                    let name = unquote(name).ok_or_else(|| format!("include {name}"))?;
                    let body = self.chart.defines.get(&name).ok_or_else(|| format!("no template {name:?}"))?;
                    Ok(Value::String(self.eval(body)?))
                }
                ["toYaml", arg] => {
                    let v = self.term(arg)?;
                    let s = serde_yaml_ng::to_string(&v).map_err(|e| e.to_string())?;
                    Ok(Value::String(s.trim_end_matches('\n').to_string()))
                }
                [s] if s.starts_with('"') => unquote(s).map(Value::String).ok_or_else(|| format!("string {s}")),
                [path] if path.starts_with('.') => self.lookup(path),
                _ => Err(format!("unsupported term `{term}`")),
            }
        }

        fn lookup(&self, path: &str) -> Result<Value, Error> {
            let mut parts = path[1..].split('.');
            let root = parts.next().unwrap();
            let key = parts.next();
            let rest: Vec<_> = parts.collect();
            let base = match (root, key) {
                ("Values", Some(k)) => self.values.get(k).cloned(),
                ("Release", Some("Namespace")) => Some(Value::String(self.namespace.clone())),
                ("Release", Some("Name")) => Some(Value::String("devsieve".into())),
                ("Release", Some("Service")) => Some(Value::String("Helm".into())),
                ("Chart", Some(k @ ("Name" | "Version" | "AppVersion"))) => {
                    let k = format!("{}{}", k[..1].to_lowercase(), &k[1..]);
                    self.chart.chart.get(&k).cloned()
                }
                _ => return Err(format!("unsupported reference {path}")),
            };
            let mut v = base.ok_or_else(|| format!("{path}: no such value"))?;
            for k in rest {
                v = v.get(k).cloned().ok_or_else(|| format!("{path}: no such value"))?;
            }
            Ok(v)
        }
    }
}
