//! `--format` as Docker's CLI takes it: `table`, `json` (this project's one
//! JSON object per line), a Go template (`'{{.Name}}'`), or `table` and a
//! template (`'table {{.ID}}\t{{.Name}}'`), with Docker's template functions.

use std::collections::HashMap;

use clap::Args;
use gtmpl::{Context, Func, FuncError, Template, Value};

#[derive(Debug, Args)]
pub struct FormatArgs {
    /// Output format: `table`, `json` (one JSON object per line), a Go
    /// template ('{{.Name}}', '{{json .}}'), or `table` and a template
    /// ('table {{.ID}}\t{{.Name}}', with a header row).
    #[arg(long, default_value = "table", value_parser = parse_format)]
    pub format: Format,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Format {
    /// The command's own table (Docker's default template).
    Table,
    /// One JSON object per line: the daemon's row, whole.
    Json,
    /// A Go template run for each row; `table` ones print a header row and
    /// align their tab-separated columns.
    Template { text: String, table: bool },
}

impl Format {
    /// Docker's `-q`: only `{{.ID}}` (or the command's key), unless a
    /// template was given.
    pub fn or_quiet(self, quiet: bool, key: &str) -> Format {
        match self {
            Format::Table if quiet => Format::Template {
                text: format!("{{{{.{key}}}}}"),
                table: false,
            },
            other => other,
        }
    }
}

/// `inspect`'s `-f, --format`, as Docker's: the indented JSON array by
/// default, `json` for it on one line, or a Go template run for each object.
#[derive(Debug, Args)]
pub struct InspectFormatArgs {
    /// Output format: `json` (the JSON array on one line), or a Go template
    /// run for each object ('{{.ID}}', '{{.Spec.Name}}', '{{json .Spec.Labels}}')
    /// [default: the indented JSON array].
    #[arg(short, long, value_name = "FORMAT", value_parser = parse_inspect_format)]
    pub format: Option<InspectFormat>,
}

#[derive(Clone, Debug)]
pub enum InspectFormat {
    Json,
    Template(String),
}

fn parse_inspect_format(text: &str) -> Result<InspectFormat, String> {
    match text.trim() {
        "json" => Ok(InspectFormat::Json),
        body => {
            let body = body.replace("\\t", "\t").replace("\\n", "\n");
            compile(&body).map_err(|err| format!("template parsing error: {err}"))?;
            Ok(InspectFormat::Template(body))
        }
    }
}

impl InspectFormatArgs {
    /// Prints `objects` (what an `inspect` found) as asked.
    pub fn print(&self, objects: &[serde_json::Value]) -> anyhow::Result<()> {
        match &self.format {
            None => println!("{}", serde_json::to_string_pretty(objects)?),
            Some(InspectFormat::Json) => println!("{}", serde_json::to_string(objects)?),
            Some(InspectFormat::Template(text)) => {
                let template = compile(text).map_err(anyhow::Error::msg)?;
                for object in objects {
                    println!("{}", render(&template, object)?);
                }
            }
        }
        Ok(())
    }

    /// Refuses `--pretty` with a format, as Docker does.
    pub fn check_pretty(&self, pretty: bool) -> anyhow::Result<()> {
        anyhow::ensure!(
            !(pretty && self.format.is_some()),
            "--format is incompatible with human friendly format"
        );
        Ok(())
    }
}

/// The objects of an `inspect` answer: an array's items, or one object.
pub fn inspected(value: serde_json::Value) -> Vec<serde_json::Value> {
    match value {
        serde_json::Value::Array(items) => items,
        one => vec![one],
    }
}

/// `--format`'s value; a template that does not parse is refused here.
pub fn parse_format(text: &str) -> Result<Format, String> {
    let trimmed = text.trim();
    let (body, table) = match trimmed {
        "" | "table" => return Ok(Format::Table),
        "json" => return Ok(Format::Json),
        _ => match trimmed.strip_prefix("table") {
            Some(rest) => (rest, true),
            None => (trimmed, false),
        },
    };
    // Docker's CLI turns the two-character `\t` and `\n` into the real ones.
    let body = body.trim().replace("\\t", "\t").replace("\\n", "\n");
    compile(&body).map_err(|err| format!("template parsing error: {err}"))?;
    Ok(Format::Template { text: body, table })
}

/// A template with Docker's functions.
pub fn compile(text: &str) -> Result<Template, String> {
    let mut template = Template::default();
    template.add_funcs(&FUNCTIONS);
    template.parse(text).map_err(|err| err.to_string())?;
    Ok(template)
}

/// `template` run on `row`; an error names `--format`.
pub fn render(template: &Template, row: &serde_json::Value) -> anyhow::Result<String> {
    template
        .render(&Context::from(to_template(row)))
        .map_err(|err| anyhow::anyhow!("--format: template: {err}"))
}

const FUNCTIONS: [(&str, Func); 8] = [
    ("json", json as Func),
    ("split", split as Func),
    ("join", join as Func),
    ("title", title as Func),
    ("lower", lower as Func),
    ("upper", upper as Func),
    ("pad", pad as Func),
    ("truncate", truncate as Func),
];

fn arguments<'a, const N: usize>(
    name: &str,
    args: &'a [Value],
) -> Result<&'a [Value; N], FuncError> {
    args.try_into()
        .map_err(|_| FuncError::ExactlyXArgs(name.to_owned(), N))
}

fn string(value: &Value) -> Result<String, FuncError> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::NoValue | Value::Nil => Ok(String::new()),
        Value::Bool(_) | Value::Number(_) => Ok(value.to_string()),
        _ => Err(FuncError::UnableToConvertFromValue),
    }
}

fn integer(value: &Value) -> Result<usize, FuncError> {
    match value {
        Value::Number(number) => number
            .as_u64()
            .map(|n| n as usize)
            .ok_or(FuncError::UnableToConvertFromValue),
        _ => Err(FuncError::UnableToConvertFromValue),
    }
}

/// Go's `json.Marshal` of the value, as Docker's `json` (no HTML escaping).
fn json(args: &[Value]) -> Result<Value, FuncError> {
    let [value] = arguments::<1>("json", args)?;
    Ok(Value::from(from_template(value).to_string()))
}

fn split(args: &[Value]) -> Result<Value, FuncError> {
    let [text, separator] = arguments::<2>("split", args)?;
    let (text, separator) = (string(text)?, string(separator)?);
    let parts: Vec<Value> = if separator.is_empty() {
        text.chars().map(|c| Value::from(c.to_string())).collect()
    } else {
        text.split(separator.as_str()).map(Value::from).collect()
    };
    Ok(Value::Array(parts))
}

fn join(args: &[Value]) -> Result<Value, FuncError> {
    let [items, separator] = arguments::<2>("join", args)?;
    let Value::Array(items) = items else {
        return Err(FuncError::UnableToConvertFromValue);
    };
    let items: Vec<String> = items.iter().map(string).collect::<Result<_, _>>()?;
    Ok(Value::from(items.join(&string(separator)?)))
}

/// Go's `strings.Title`: each word's first letter upper-cased.
fn title(args: &[Value]) -> Result<Value, FuncError> {
    let [text] = arguments::<1>("title", args)?;
    let mut out = String::new();
    let mut at_word_start = true;
    for c in string(text)?.chars() {
        if at_word_start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        at_word_start = !c.is_alphanumeric() && c != '_' && c != '\'';
    }
    Ok(Value::from(out))
}

fn lower(args: &[Value]) -> Result<Value, FuncError> {
    let [text] = arguments::<1>("lower", args)?;
    Ok(Value::from(string(text)?.to_lowercase()))
}

fn upper(args: &[Value]) -> Result<Value, FuncError> {
    let [text] = arguments::<1>("upper", args)?;
    Ok(Value::from(string(text)?.to_uppercase()))
}

/// Spaces before and after a text that is not empty.
fn pad(args: &[Value]) -> Result<Value, FuncError> {
    let [text, before, after] = arguments::<3>("pad", args)?;
    let text = string(text)?;
    if text.is_empty() {
        return Ok(Value::from(text));
    }
    Ok(Value::from(format!(
        "{}{text}{}",
        " ".repeat(integer(before)?),
        " ".repeat(integer(after)?)
    )))
}

/// At most `length` characters.
fn truncate(args: &[Value]) -> Result<Value, FuncError> {
    let [text, length] = arguments::<2>("truncate", args)?;
    let length = integer(length)?;
    Ok(Value::from(
        string(text)?.chars().take(length).collect::<String>(),
    ))
}

/// A JSON row as a template's dot: objects' keys are fields (`.Name`).
pub fn to_template(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                Value::from(n.as_f64().unwrap_or_default())
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(items) => Value::Array(items.iter().map(to_template).collect()),
        serde_json::Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), to_template(v)))
                .collect::<HashMap<_, _>>(),
        ),
    }
}

fn from_template(value: &Value) -> serde_json::Value {
    match value {
        Value::NoValue | Value::Nil | Value::Function(_) => serde_json::Value::Null,
        Value::Bool(b) => (*b).into(),
        Value::String(s) => s.as_str().into(),
        Value::Number(n) => n
            .as_u64()
            .map(serde_json::Value::from)
            .or_else(|| n.as_i64().map(serde_json::Value::from))
            .unwrap_or_else(|| n.as_f64().unwrap_or_default().into()),
        Value::Array(items) => items.iter().map(from_template).collect(),
        Value::Object(map) | Value::Map(map) => serde_json::Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), from_template(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn run(format: &str, row: serde_json::Value) -> String {
        let Format::Template { text, .. } = parse_format(format).unwrap() else {
            panic!("{format} is not a template");
        };
        render(&compile(&text).unwrap(), &row).unwrap()
    }

    #[test]
    fn formats_parse_as_docker_reads_them() {
        assert_eq!(parse_format("table"), Ok(Format::Table));
        assert_eq!(parse_format("json"), Ok(Format::Json));
        assert_eq!(
            parse_format(r"table {{.ID}}\t{{.Name}}"),
            Ok(Format::Template {
                text: "{{.ID}}\t{{.Name}}".into(),
                table: true
            })
        );
        assert_eq!(
            parse_format("{{.Name}}"),
            Ok(Format::Template {
                text: "{{.Name}}".into(),
                table: false
            })
        );
        let refused = parse_format("{{.Name").unwrap_err();
        assert!(refused.starts_with("template parsing error"), "{refused}");
        assert!(parse_format("{{nosuchfunc .Name}}").is_err());
    }

    #[test]
    fn quiet_is_the_id_unless_a_template_is_given() {
        assert_eq!(
            Format::Table.or_quiet(true, "ID"),
            Format::Template {
                text: "{{.ID}}".into(),
                table: false
            }
        );
        assert_eq!(Format::Json.or_quiet(true, "ID"), Format::Json);
        assert_eq!(Format::Table.or_quiet(false, "ID"), Format::Table);
    }

    #[test]
    fn docker_template_functions() {
        let row = json!({"Name": "web front", "ID": "abcdef", "Self": true, "Tags": "a,b"});
        assert_eq!(run("{{.Name}}", row.clone()), "web front");
        assert_eq!(run("{{upper .Name}}", row.clone()), "WEB FRONT");
        assert_eq!(run("{{lower \"AB\"}}", row.clone()), "ab");
        assert_eq!(run("{{title .Name}}", row.clone()), "Web Front");
        assert_eq!(run("{{truncate .ID 3}}", row.clone()), "abc");
        assert_eq!(run("{{pad .ID 1 2}}|", row.clone()), " abcdef  |");
        assert_eq!(
            run("{{join (split .Tags \",\") \"+\"}}", row.clone()),
            "a+b"
        );
        assert_eq!(run("{{if .Self}}me{{end}}", row.clone()), "me");
        assert_eq!(
            run("{{json .}}", json!({"Name": "web", "N": 2})),
            r#"{"N":2,"Name":"web"}"#
        );
        assert_eq!(run("{{json .Name}}", row), r#""web front""#);
    }
}
