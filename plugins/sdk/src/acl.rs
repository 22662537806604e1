//! The ACL hook (WIT world `acl-plugin`): owner, mode and granted access per object and caller.

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "acl-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_acl_world",
        default_bindings_module: "blobmount_plugin_sdk::acl::bindings",
    });
}

pub use bindings::blobmount::policy::types::ObjectInfo;
pub use bindings::exports::blobmount::policy::acl::{Access, Caller, Decision};

use crate::Params;

crate::host_log_bridge!(crate::acl::bindings);

/// Implement this for an ACL plugin, then call [`acl_plugin!`](crate::acl_plugin).
pub trait Acl: 'static {
    /// Build the plugin from its parameters; `Err` refuses them.
    fn new(params: Params) -> Result<Self, String>
    where
        Self: Sized;

    /// Owner, mode and granted access for `obj` as seen by `who`.
    fn decide(&self, obj: &ObjectInfo, who: Caller) -> Decision;
}

thread_local! {
    static CELL: std::cell::RefCell<Option<Box<dyn Acl>>> = const { std::cell::RefCell::new(None) };
}
#[doc(hidden)]
pub fn __set(v: Box<dyn Acl>) {
    CELL.with(|c| *c.borrow_mut() = Some(v));
}
/// Run `f` on the plugin value. A hook called before `init` is a host bug: trap.
#[doc(hidden)]
pub fn __with<R>(f: impl FnOnce(&dyn Acl) -> R) -> R {
    CELL.with(|c| match c.borrow().as_deref() {
        Some(v) => f(v),
        None => std::process::abort(),
    })
}

/// Export an [`Acl`] implementation.
#[macro_export]
macro_rules! acl_plugin {
    ($t:ty) => {
        #[doc(hidden)]
        pub struct __BlobmountAclGlue;
        impl $crate::acl::bindings::exports::blobmount::policy::plugin::Guest for __BlobmountAclGlue {
            fn init(params: ::std::vec::Vec<(::std::string::String, ::std::string::String)>)
                -> ::std::result::Result<(), ::std::string::String>
            {
                let v = <$t as $crate::acl::Acl>::new($crate::Params(params))?;
                $crate::acl::__set(::std::boxed::Box::new(v));
                Ok(())
            }
        }
        impl $crate::acl::bindings::exports::blobmount::policy::acl::Guest for __BlobmountAclGlue {
            fn decide(obj: $crate::acl::ObjectInfo, who: $crate::acl::Caller) -> $crate::acl::Decision {
                $crate::acl::__with(|p| p.decide(&obj, who))
            }
        }
        $crate::acl::bindings::__export_acl_world!(__BlobmountAclGlue with_types_in $crate::acl::bindings);
    };
}
