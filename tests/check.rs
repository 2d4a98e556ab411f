//! Integration tests; see the module list in tests.rs.
