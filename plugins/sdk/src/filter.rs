//! The filter hook (WIT world `filter-plugin`): which objects the mount shows.

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "filter-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_filter_world",
        default_bindings_module: "blobmount_plugin_sdk::filter::bindings",
    });
}

pub use bindings::blobmount::policy::types::ObjectInfo;
pub use bindings::exports::blobmount::policy::filter::Verdict;

use crate::Params;

crate::host_log_bridge!(crate::filter::bindings);

/// Implement this for a filter plugin, then call [`filter_plugin!`](crate::filter_plugin).
pub trait Filter: 'static {
    /// Build the plugin from its parameters; `Err` refuses them (the mount fails to start).
    fn new(params: Params) -> Result<Self, String>
    where
        Self: Sized;

    /// Decide for one object. Must be pure (same inputs, same answer).
    fn filter(&self, obj: &ObjectInfo, now_secs: i64) -> Verdict;

    /// Decide for a LIST page; the default calls [`Filter::filter`] per object.
    fn filter_batch(&self, objs: &[ObjectInfo], now_secs: i64) -> Vec<Verdict> {
        objs.iter().map(|o| self.filter(o, now_secs)).collect()
    }
}

thread_local! {
    static CELL: std::cell::RefCell<Option<Box<dyn Filter>>> = const { std::cell::RefCell::new(None) };
}
#[doc(hidden)]
pub fn __set(v: Box<dyn Filter>) {
    CELL.with(|c| *c.borrow_mut() = Some(v));
}
/// Run `f` on the plugin value. A hook called before `init` is a host bug: trap.
#[doc(hidden)]
pub fn __with<R>(f: impl FnOnce(&dyn Filter) -> R) -> R {
    CELL.with(|c| match c.borrow().as_deref() {
        Some(v) => f(v),
        None => std::process::abort(),
    })
}

/// Export a [`Filter`] implementation as the component's `filter` and `plugin` interfaces.
#[macro_export]
macro_rules! filter_plugin {
    ($t:ty) => {
        #[doc(hidden)]
        pub struct __BlobmountFilterGlue;
        impl $crate::filter::bindings::exports::blobmount::policy::plugin::Guest
            for __BlobmountFilterGlue
        {
            fn init(params: ::std::vec::Vec<(::std::string::String, ::std::string::String)>)
                -> ::std::result::Result<(), ::std::string::String>
            {
                let v = <$t as $crate::filter::Filter>::new($crate::Params(params))?;
                $crate::filter::__set(::std::boxed::Box::new(v));
                Ok(())
            }
        }
        impl $crate::filter::bindings::exports::blobmount::policy::filter::Guest
            for __BlobmountFilterGlue
        {
            fn filter(obj: $crate::filter::ObjectInfo, now_secs: i64) -> $crate::filter::Verdict {
                $crate::filter::__with(|p| p.filter(&obj, now_secs))
            }
            fn filter_batch(
                objs: ::std::vec::Vec<$crate::filter::ObjectInfo>,
                now_secs: i64,
            ) -> ::std::vec::Vec<$crate::filter::Verdict> {
                $crate::filter::__with(|p| p.filter_batch(&objs, now_secs))
            }
        }
        $crate::filter::bindings::__export_filter_world!(__BlobmountFilterGlue with_types_in $crate::filter::bindings);
    };
}
