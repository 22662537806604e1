//! The policy contract between blobmount's file-system core and whatever decides policy.
//!
//! Why a separate crate: the core must be able to ask "is this object visible?", "what is
//! this entry called?", "how long may I trust this stat?" and "who owns this?" without
//! linking wasmtime (a large, slow-to-build dependency) and without knowing whether the
//! answer comes from a WASM plugin or from the built-in defaults. So this crate holds only
//! plain Rust types mirroring the WIT package `blobmount:policy@0.1.0` (`wit/policy.wit`),
//! the [`Policy`] trait the core calls (synchronous, `Send + Sync`, one method per hook), and
//! [`Builtin`], the defaults that need no plugin. `blobmount-policy` implements [`Policy`]
//! with WASM components and falls back to [`Builtin`] for hooks without a plugin.
//!
//! This crate must not depend on the core, the backend, wasmtime or an async runtime.

mod builtin;
mod types;

pub use builtin::{
    AclConfig, Builtin, BuiltinConfig, BuiltinError, ConflictRule, ConsistencyConfig, FILE_SUFFIX,
    FilterConfig, NAME_MAX, is_valid_name, stand_in_name,
};
pub use types::{
    Access, AclDecision, Caller, ConflictEntry, ConflictKind, Consistency, ObjectInfo, Resolution,
    Ttl, Verdict,
};

/// The four policy hooks, as the file-system core calls them.
///
/// Every method is synchronous and must answer quickly (the WASM implementation runs a
/// pre-instantiated plugin under a fuel budget and caches pure answers); none may fail: an
/// implementation that cannot decide answers with its configured failure mode instead.
/// Implementations are shared between FUSE worker tasks, hence `Send + Sync`.
pub trait Policy: Send + Sync {
    /// Filter hook: is `obj` shown, and may it be modified? `now_secs` is the current time
    /// (seconds since the Unix epoch), for age rules.
    fn filter(&self, obj: &ObjectInfo, now_secs: i64) -> Verdict;

    /// Filter hook for a whole LIST page: one verdict per object, in order. The default calls
    /// [`Policy::filter`] per object; plugins answer a page in one call.
    fn filter_batch(&self, objs: &[ObjectInfo], now_secs: i64) -> Vec<Verdict> {
        objs.iter().map(|o| self.filter(o, now_secs)).collect()
    }

    /// Name-conflict hook: the colliding `entries` in directory `parent` (a key prefix
    /// ending with `/`, or empty for the root). Returns one resolution per entry, in order;
    /// renamed names are valid Linux names, distinct within the group.
    fn resolve_conflict(
        &self,
        parent: &str,
        kind: ConflictKind,
        entries: &[ConflictEntry],
    ) -> Vec<Resolution>;

    /// Consistency hook: TTLs and revalidation for `key` (directories end with `/`).
    fn consistency(&self, key: &str, is_dir: bool) -> Consistency;

    /// ACL hook: owner, mode and granted access for `obj` as seen by `caller`.
    fn acl(&self, obj: &ObjectInfo, caller: Caller) -> AclDecision;
}
