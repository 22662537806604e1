//! The name-conflict hook (WIT world `name-conflict-plugin`): what colliding or invalid store
//! names are shown as.

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "name-conflict-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_name_conflict_world",
        default_bindings_module: "blobmount_plugin_sdk::name_conflict::bindings",
    });
}

pub use bindings::exports::blobmount::policy::name_conflict::{ConflictKind, Entry, Resolution};

use crate::Params;

crate::host_log_bridge!(crate::name_conflict::bindings);

/// Implement this for a name-conflict plugin, then call
/// [`name_conflict_plugin!`](crate::name_conflict_plugin).
pub trait NameConflict: 'static {
    /// Build the plugin from its parameters; `Err` refuses them.
    fn new(params: Params) -> Result<Self, String>
    where
        Self: Sized;

    /// One resolution per entry, in order. Renamed names must be valid Linux names and
    /// distinct within the group (the host checks, and treats a violation as a bad return).
    fn resolve(&self, parent: &str, kind: ConflictKind, entries: &[Entry]) -> Vec<Resolution>;
}

thread_local! {
    static CELL: std::cell::RefCell<Option<Box<dyn NameConflict>>> = const { std::cell::RefCell::new(None) };
}
#[doc(hidden)]
pub fn __set(v: Box<dyn NameConflict>) {
    CELL.with(|c| *c.borrow_mut() = Some(v));
}
/// Run `f` on the plugin value. A hook called before `init` is a host bug: trap.
#[doc(hidden)]
pub fn __with<R>(f: impl FnOnce(&dyn NameConflict) -> R) -> R {
    CELL.with(|c| match c.borrow().as_deref() {
        Some(v) => f(v),
        None => std::process::abort(),
    })
}

/// Export a [`NameConflict`] implementation.
#[macro_export]
macro_rules! name_conflict_plugin {
    ($t:ty) => {
        #[doc(hidden)]
        pub struct __BlobmountConflictGlue;
        impl $crate::name_conflict::bindings::exports::blobmount::policy::plugin::Guest
            for __BlobmountConflictGlue
        {
            fn init(params: ::std::vec::Vec<(::std::string::String, ::std::string::String)>)
                -> ::std::result::Result<(), ::std::string::String>
            {
                let v = <$t as $crate::name_conflict::NameConflict>::new($crate::Params(params))?;
                $crate::name_conflict::__set(::std::boxed::Box::new(v));
                Ok(())
            }
        }
        impl $crate::name_conflict::bindings::exports::blobmount::policy::name_conflict::Guest
            for __BlobmountConflictGlue
        {
            fn resolve(
                parent: ::std::string::String,
                kind: $crate::name_conflict::ConflictKind,
                entries: ::std::vec::Vec<$crate::name_conflict::Entry>,
            ) -> ::std::vec::Vec<$crate::name_conflict::Resolution> {
                $crate::name_conflict::__with(|p| p.resolve(&parent, kind, &entries))
            }
        }
        $crate::name_conflict::bindings::__export_name_conflict_world!(__BlobmountConflictGlue with_types_in $crate::name_conflict::bindings);
    };
}
