//! `service logs`: the manager serving the request asks, through the store
//! every agent watches, the nodes holding the tasks for their output; the
//! nodes send it straight back to that manager, which collects it here.

use std::{
    collections::HashMap,
    sync::{Mutex, mpsc},
};

use crate::{api::assignments::TaskLog, lock::Locked as _};

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
        self.open.locked()
    }
}
