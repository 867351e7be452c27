//! `service logs`: the manager serving the request asks, through the store
//! every agent watches, the nodes holding the tasks for their output; the
//! nodes send it straight back to that manager, which collects it here.

use std::{
    collections::HashMap,
    sync::{Mutex, mpsc},
};

use serde::{Deserialize, Serialize};

/// One task's output, as its node keeps it (stdout and stderr together).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLog {
    pub task_id: String,
    pub output: String,
}

/// A node's answer: its node ID (from its certificate) and its tasks' logs.
pub type NodeLogs = (String, Vec<TaskLog>);

/// The log requests this manager waits on, by request ID.
#[derive(Default)]
pub struct LogWaiters {
    open: Mutex<HashMap<String, mpsc::Sender<NodeLogs>>>,
}

impl LogWaiters {
    pub fn open(&self, request_id: &str) -> mpsc::Receiver<NodeLogs> {
        let (tx, rx) = mpsc::channel();
        self.lock().insert(request_id.to_owned(), tx);
        rx
    }

    pub fn close(&self, request_id: &str) {
        self.lock().remove(request_id);
    }

    /// Hands a node's answer to the request waiting for it; an answer to a
    /// request nobody waits for (any more) is dropped.
    pub fn deliver(&self, request_id: &str, node_id: &str, logs: Vec<TaskLog>) {
        if let Some(waiter) = self.lock().get(request_id) {
            let _ = waiter.send((node_id.to_owned(), logs));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::Sender<NodeLogs>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The last `lines` lines of `output` (all of it without a limit).
pub fn tail(output: &str, lines: Option<u64>) -> &str {
    let Some(lines) = lines else { return output };
    if lines == 0 {
        return "";
    }
    let body = output.strip_suffix('\n').unwrap_or(output);
    let mut seen = 0;
    for (at, byte) in body.bytes().enumerate().rev() {
        if byte == b'\n' {
            seen += 1;
            if seen == lines {
                return &output[at + 1..];
            }
        }
    }
    output
}

#[cfg(test)]
mod tests {
    use super::tail;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", Some(2)), "b\nc\n");
        assert_eq!(tail("a\nb\nc", Some(2)), "b\nc");
        assert_eq!(tail("a\nb\nc\n", Some(5)), "a\nb\nc\n");
        assert_eq!(tail("a\nb\nc\n", Some(0)), "");
        assert_eq!(tail("a\nb\nc\n", None), "a\nb\nc\n");
        assert_eq!(tail("", Some(3)), "");
    }
}
