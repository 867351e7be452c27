//! The managers' gRPC API on the control-plane port, generated from
//! `proto/cluster.proto` by tonic-build.

tonic::include_proto!("swarm.cluster.v1");
