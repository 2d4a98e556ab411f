//! The one integration-test binary (as ripgrep does): each module drives the built `tollgate`
//! binary or the library crates end to end.

// Shared helpers: locating the binary, temp dirs, running commands with a timeout.
mod util;
