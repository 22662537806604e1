//! The consistency hook (WIT world `consistency-plugin`): TTLs and revalidation per path.

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "consistency-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_consistency_world",
        default_bindings_module: "blobmount_plugin_sdk::consistency::bindings",
    });
}

pub use bindings::exports::blobmount::policy::consistency::{Decision, Ttl};

use crate::Params;

crate::host_log_bridge!(crate::consistency::bindings);

/// Implement this for a consistency plugin, then call
/// [`consistency_plugin!`](crate::consistency_plugin).
pub trait ConsistencyPolicy: 'static {
    /// Build the plugin from its parameters; `Err` refuses them.
    fn new(params: Params) -> Result<Self, String>
    where
        Self: Sized;

    /// The policy for `key` (directories end with `/`).
    fn policy_for(&self, key: &str, is_dir: bool) -> Decision;
}

thread_local! {
    static CELL: std::cell::RefCell<Option<Box<dyn ConsistencyPolicy>>> = const { std::cell::RefCell::new(None) };
}
#[doc(hidden)]
pub fn __set(v: Box<dyn ConsistencyPolicy>) {
    CELL.with(|c| *c.borrow_mut() = Some(v));
}
/// Run `f` on the plugin value. A hook called before `init` is a host bug: trap.
#[doc(hidden)]
pub fn __with<R>(f: impl FnOnce(&dyn ConsistencyPolicy) -> R) -> R {
    CELL.with(|c| match c.borrow().as_deref() {
        Some(v) => f(v),
        None => std::process::abort(),
    })
}

/// Export a [`ConsistencyPolicy`] implementation.
#[macro_export]
macro_rules! consistency_plugin {
    ($t:ty) => {
        #[doc(hidden)]
        pub struct __BlobmountConsistencyGlue;
        impl $crate::consistency::bindings::exports::blobmount::policy::plugin::Guest
            for __BlobmountConsistencyGlue
        {
            fn init(params: ::std::vec::Vec<(::std::string::String, ::std::string::String)>)
                -> ::std::result::Result<(), ::std::string::String>
            {
                let v = <$t as $crate::consistency::ConsistencyPolicy>::new($crate::Params(params))?;
                $crate::consistency::__set(::std::boxed::Box::new(v));
                Ok(())
            }
        }
        impl $crate::consistency::bindings::exports::blobmount::policy::consistency::Guest
            for __BlobmountConsistencyGlue
        {
            fn policy_for(key: ::std::string::String, is_dir: bool) -> $crate::consistency::Decision {
                $crate::consistency::__with(|p| p.policy_for(&key, is_dir))
            }
        }
        $crate::consistency::bindings::__export_consistency_world!(__BlobmountConsistencyGlue with_types_in $crate::consistency::bindings);
    };
}
