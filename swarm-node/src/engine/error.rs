//! What an Engine API request fails with: Docker's status code and its
//! `{"message": ...}` body.

use hyper::StatusCode;

/// A refused request: the status Docker answers with, and its words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

/// Docker's answer on a node that is in no swarm.
pub const NOT_IN_SWARM: &str = "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again.";

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// The control API's refusal, with the status Docker gives the same
    /// refusal, and its words where the `swarm` CLI's differ.
    pub fn from_control(message: &str) -> Self {
        // The swarm CLI's hints name its own commands; Docker's do not.
        let message = match message.find(" (see `swarm") {
            Some(at) => &message[..at],
            None => message,
        };
        if message.starts_with("This node is not part of a swarm") {
            return Self::new(StatusCode::SERVICE_UNAVAILABLE, NOT_IN_SWARM);
        }
        if message.starts_with("This node is not a swarm manager")
            || message.starts_with("You are attempting to leave")
        {
            return Self::new(StatusCode::SERVICE_UNAVAILABLE, message);
        }
        // Docker's statuses for autolock's refusals (moby's errdefs kinds).
        if message.starts_with("Swarm is encrypted") {
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                message.replace("\"swarm unlock\"", "\"docker swarm unlock\""),
            );
        }
        if message == "swarm is not locked" {
            return Self::new(StatusCode::CONFLICT, message);
        }
        if message.ends_with("invalid key provided") {
            return Self::new(StatusCode::UNAUTHORIZED, message);
        }
        if message.starts_with("This node is already part of a swarm") {
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                message.replace("\"swarm leave\"", "\"docker swarm leave\""),
            );
        }
        let status = if message.contains("not found") || message.starts_with("No such") {
            StatusCode::NOT_FOUND
        } else if message.contains("already exists") {
            StatusCode::CONFLICT
        } else if message.contains("update out of sequence") {
            // Docker passes swarmkit's gRPC error through as a 500.
            return Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "rpc error: code = Unknown desc = update out of sequence",
            );
        } else if message.contains("no leader") || message.contains("quorum") {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::BAD_REQUEST
        };
        Self::new(status, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_refusals_get_dockers_status_and_words() {
        let not_found = ApiError::from_control("node abc not found (see `swarm node ls`)");
        assert_eq!(not_found.status, StatusCode::NOT_FOUND);
        assert_eq!(not_found.message, "node abc not found");
        let outside = ApiError::from_control(
            "This node is not part of a swarm: run `swarm init` to create one",
        );
        assert_eq!(outside.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(outside.message, NOT_IN_SWARM);
        let conflict = ApiError::from_control("network with name a already exists");
        assert_eq!(conflict.status, StatusCode::CONFLICT);
        let sequence = ApiError::from_control("update out of sequence");
        assert_eq!(sequence.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(sequence.message.ends_with("update out of sequence"));
        assert_eq!(
            ApiError::from_control("invalid constraint").status,
            StatusCode::BAD_REQUEST
        );
        let locked = ApiError::from_control(&crate::api::ClusterError::SwarmLocked.to_string());
        assert_eq!(locked.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            locked.message,
            "Swarm is encrypted and needs to be unlocked before it can be used. Please use \"docker swarm unlock\" to unlock it."
        );
        let wrong = ApiError::from_control("swarm could not be unlocked: invalid key provided");
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    }
}
