//! Images for the native runtime, as a small container engine holds them:
//! references read as Docker reads them, pulls from OCI registries into a
//! content store where each layer is unpacked once, the image's config,
//! and each task's root as an overlayfs of the layers.

pub mod config;
pub mod layer;
pub mod reference;
pub mod rootfs;
pub mod store;

pub use config::ImageConfig;
pub use reference::{HOST_IMAGE, ImageSource, ReferenceError, pinned};
pub use store::{Distribution, Image, ImageError, ImageStore, Registries};
