//! `swarm events`: the swarm's changes as the manager applies them, one
//! line each, as `docker events` prints them.

use std::collections::BTreeMap;

use anyhow::Context as _;
use clap::Args;

use super::{
    call,
    format::{Format, compile, parse_format, render},
};
use crate::{
    api::control::{Request, Response, SwarmEvent},
    log_time::{now_nanos, parse_since, stamp},
};

/// How long one request waits for a change before asking again.
const POLL_MILLIS: u64 = 1000;

/// Kinds of object `--filter type=` takes.
const TYPES: &[&str] = &["service", "node", "network", "secret", "config", "task"];

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Show events from this time on (RFC 3339 date and time, Unix
    /// timestamp, or a duration before now such as 10m) [default: only new
    /// ones]. A manager keeps its latest 1000.
    #[arg(long, value_parser = parse_time)]
    since: Option<i64>,
    /// Stop at this time (same forms) [default: run until stopped].
    #[arg(long, value_parser = parse_time)]
    until: Option<i64>,
    /// Only some events: `type=service|node|network|secret|config|task`,
    /// `event=create|update|remove`, or an object by name or ID prefix
    /// (`service=web`, `node=h2`, ...). Keys repeat as OR, differ as AND.
    #[arg(long, short = 'f', value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// `json` (Docker's event object, one a line) or a Go template
    /// ('{{.Type}} {{.Action}} {{.Actor.Attributes.name}}') [default: a
    /// line as docker events prints it].
    #[arg(long, value_parser = parse_format)]
    format: Option<Format>,
}

fn parse_time(text: &str) -> Result<i64, String> {
    parse_since(text, now_nanos())
        .map_err(|err| format!("{err}; for example 2013-01-02T13:23:37Z or 10m"))
}

/// `--filter`s by key.
struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    fn parse(given: &[String]) -> anyhow::Result<Self> {
        let mut filters: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for filter in given {
            let (key, value) = filter.split_once('=').with_context(|| {
                format!("bad format of filter {filter:?} (expected name=value)")
            })?;
            let known = key == "type" || key == "event" || TYPES.contains(&key);
            anyhow::ensure!(
                known,
                "invalid filter '{key}': swarm events filters by type, event, or an object ({})",
                TYPES.join(", ")
            );
            if key == "type" {
                anyhow::ensure!(
                    TYPES.contains(&value),
                    "invalid filter 'type={value}': the types are {}",
                    TYPES.join(", ")
                );
            }
            filters
                .entry(key.to_owned())
                .or_default()
                .push(value.to_owned());
        }
        Ok(Self(filters))
    }

    fn pass(&self, event: &SwarmEvent) -> bool {
        self.0.iter().all(|(key, values)| match key.as_str() {
            "type" => values.contains(&event.kind),
            "event" => values.contains(&event.action),
            kind => {
                let name = event.attributes.get("name").map_or("", String::as_str);
                event.kind == kind
                    && values
                        .iter()
                        .any(|v| name == v || event.id.starts_with(v.as_str()))
            }
        })
    }
}

pub fn run(host: &str, args: EventsArgs) -> anyhow::Result<()> {
    let filters = Filters::parse(&args.filter)?;
    let template = match &args.format {
        Some(Format::Template { text, .. }) => Some(compile(text).map_err(anyhow::Error::msg)?),
        _ => None,
    };
    let print = |event: &SwarmEvent| -> anyhow::Result<()> {
        if !filters.pass(event) {
            return Ok(());
        }
        let message = event.docker_message();
        let line = match (&args.format, &template) {
            (Some(Format::Json), _) => message.to_string(),
            (_, Some(template)) => render(template, &message)?,
            _ => line(event),
        };
        println!("{line}");
        Ok(())
    };
    // The events this manager keeps; without --since, only what comes next.
    let (kept, mut last) = ask(host, None, 0)?;
    if let Some(since) = args.since {
        for event in kept.iter().filter(|e| e.time_nanos >= since) {
            if args.until.is_some_and(|until| event.time_nanos > until) {
                return Ok(());
            }
            print(event)?;
        }
    }
    loop {
        if args.until.is_some_and(|until| now_nanos() >= until) {
            return Ok(());
        }
        let (events, now_last) = ask(host, Some(last), POLL_MILLIS)?;
        for event in &events {
            if args.until.is_some_and(|until| event.time_nanos > until) {
                return Ok(());
            }
            print(event)?;
        }
        last = now_last;
    }
}

fn ask(host: &str, after: Option<u64>, wait_millis: u64) -> anyhow::Result<(Vec<SwarmEvent>, u64)> {
    match call(host, &Request::Events { after, wait_millis })? {
        Response::Events { events, last } => Ok((events, last)),
        Response::Error(message) => anyhow::bail!(message),
        _ => anyhow::bail!("the daemon answered `events` with something else"),
    }
}

/// `docker events`' line: time, type, action, ID, then the attributes.
fn line(event: &SwarmEvent) -> String {
    let attributes = event
        .attributes
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{} {} {} {} ({attributes})",
        stamp(Some(event.time_nanos)),
        event.kind,
        event.action,
        event.id
    )
}
