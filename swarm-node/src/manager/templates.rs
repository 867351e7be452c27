//! Docker's service templates: `--hostname "{{.Node.Hostname}}-{{.Task.Slot}}"`,
//! and the same in environment values and mount sources and targets,
//! expanded for each task with its service, node and slot (Go's
//! text/template, through gtmpl).

use std::collections::{BTreeMap, HashMap};

use gtmpl::Value;

use crate::api::{Platform, specs::ServiceSpec};

/// What a template can name: Docker's `.Service`, `.Node` and `.Task`.
pub struct TemplateContext<'a> {
    pub service_id: &'a str,
    pub service_name: &'a str,
    pub service_labels: &'a BTreeMap<String, String>,
    pub node_id: &'a str,
    pub node_hostname: &'a str,
    pub platform: &'a Platform,
    pub task_id: &'a str,
    pub slot: u64,
}

impl TemplateContext<'_> {
    fn value(&self) -> Value {
        let object = |pairs: Vec<(&str, Value)>| {
            Value::Object(
                pairs
                    .into_iter()
                    .map(|(key, value)| (key.to_owned(), value))
                    .collect(),
            )
        };
        let labels: HashMap<String, Value> = self
            .service_labels
            .iter()
            .map(|(key, value)| (key.clone(), Value::from(value.as_str())))
            .collect();
        object(vec![
            (
                "Service",
                object(vec![
                    ("ID", self.service_id.into()),
                    ("Name", self.service_name.into()),
                    ("Labels", Value::Map(labels)),
                ]),
            ),
            (
                "Node",
                object(vec![
                    ("ID", self.node_id.into()),
                    ("Hostname", self.node_hostname.into()),
                    (
                        "Platform",
                        object(vec![
                            ("OS", self.platform.os.as_str().into()),
                            ("Architecture", self.platform.architecture.as_str().into()),
                        ]),
                    ),
                ]),
            ),
            (
                "Task",
                object(vec![
                    ("ID", self.task_id.into()),
                    (
                        "Name",
                        format!("{}.{}.{}", self.service_name, self.slot, self.task_id).into(),
                    ),
                    ("Slot", self.slot.to_string().into()),
                ]),
            ),
        ])
    }

    /// `text` with its templates filled in; text without `{{` as it is.
    pub fn expand(&self, text: &str) -> Result<String, String> {
        if !text.contains("{{") {
            return Ok(text.to_owned());
        }
        gtmpl::template(text, self.value()).map_err(|err| format!("template {text:?}: {err}"))
    }

    /// The spec with its hostname, environment values and mount sources
    /// and targets expanded.
    pub fn expand_spec(&self, spec: &ServiceSpec) -> Result<ServiceSpec, String> {
        let mut spec = spec.clone();
        if let Some(hostname) = &spec.hostname {
            spec.hostname = Some(self.expand(hostname)?);
        }
        for var in &mut spec.env {
            *var = self.expand(var)?;
        }
        for mount in &mut spec.mounts {
            mount.source = self.expand(&mount.source)?;
            mount.target = self.expand(&mount.target)?;
        }
        Ok(spec)
    }
}

/// Refuses a spec whose templates do not expand (bad syntax, a field
/// Docker does not offer), at create and update rather than on each node.
pub fn check(spec: &ServiceSpec) -> Result<(), String> {
    let platform = Platform::of_this_host();
    let sample = TemplateContext {
        service_id: "service",
        service_name: &spec.name,
        service_labels: &spec.labels,
        node_id: "node",
        node_hostname: "node",
        platform: &platform,
        task_id: "task",
        slot: 1,
    };
    sample.expand_spec(spec).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::specs::ServiceMode;

    fn context<'a>(
        labels: &'a BTreeMap<String, String>,
        platform: &'a Platform,
    ) -> TemplateContext<'a> {
        TemplateContext {
            service_id: "svc1",
            service_name: "web",
            service_labels: labels,
            node_id: "n1",
            node_hostname: "h1",
            platform,
            task_id: "t1",
            slot: 3,
        }
    }

    #[test]
    fn docker_fields_expand() {
        let labels = BTreeMap::from([("tier".to_owned(), "front".to_owned())]);
        let platform = Platform {
            os: "linux".into(),
            architecture: "x86_64".into(),
        };
        let ctx = context(&labels, &platform);
        assert_eq!(
            ctx.expand("{{.Service.Name}}-{{.Task.Slot}}@{{.Node.Hostname}}")
                .unwrap(),
            "web-3@h1"
        );
        assert_eq!(ctx.expand("{{.Task.Name}}").unwrap(), "web.3.t1");
        assert_eq!(
            ctx.expand("{{index .Service.Labels \"tier\"}}").unwrap(),
            "front"
        );
        assert_eq!(ctx.expand("{{.Node.Platform.OS}}").unwrap(), "linux");
        assert_eq!(ctx.expand("plain").unwrap(), "plain");
        assert!(ctx.expand("{{.Service.Name").is_err());
    }

    #[test]
    fn specs_with_bad_templates_are_refused() {
        let mut spec = ServiceSpec::new("web", "host", ServiceMode::Replicated { replicas: 1 });
        spec.hostname = Some("{{.Node.Hostname}}".into());
        assert!(check(&spec).is_ok());
        spec.env = vec!["X={{.Nope".into()];
        assert!(check(&spec).unwrap_err().contains("X={{.Nope"));
    }
}
