//! The few libumockdev (and GLib) C functions this crate calls, behind a safe
//! wrapper. build.rs links them (pkg-config `umockdev-1.0`). Not bound:
//! `umockdev_testbed_uevent`, which only works in a preloaded process (see
//! `uevent.rs`).
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::ptr::{self, NonNull};

/// `UMockdevTestbed`, a GObject; only ever handled by pointer.
#[repr(C)]
struct UMockdevTestbed {
    _opaque: [u8; 0],
}

/// GLib's `GError` (public struct layout).
#[repr(C)]
struct GError {
    domain: u32,
    code: c_int,
    message: *mut c_char,
}

unsafe extern "C" {
    fn umockdev_testbed_new() -> *mut UMockdevTestbed;
    fn umockdev_testbed_get_root_dir(testbed: *mut UMockdevTestbed) -> *mut c_char;
    fn umockdev_testbed_add_from_string(
        testbed: *mut UMockdevTestbed,
        data: *const c_char,
        error: *mut *mut GError,
    ) -> c_int;
    fn umockdev_testbed_remove_device(testbed: *mut UMockdevTestbed, syspath: *const c_char);
}

unsafe extern "C" {
    fn g_object_unref(object: *mut c_void);
}

unsafe extern "C" {
    fn g_free(memory: *mut c_void);
    fn g_error_free(error: *mut GError);
}

/// An owned reference to a `UMockdevTestbed`. Not `Send`: GObjects made by
/// libumockdev are used from the thread that made them.
pub(crate) struct RawTestbed {
    testbed: NonNull<UMockdevTestbed>,
}

impl RawTestbed {
    /// `umockdev_testbed_new`: makes `/tmp/umockdev.XXXXXX` and sets `UMOCKDEV_DIR`
    /// in this process's environment.
    pub(crate) fn new() -> Option<Self> {
        // SAFETY: takes no arguments; returns a new owned reference (or NULL on failure,
        // which we check), released by `g_object_unref` in `Drop`.
        let testbed = unsafe { umockdev_testbed_new() };
        NonNull::new(testbed).map(|testbed| Self { testbed })
    }

    pub(crate) fn root_dir(&self) -> String {
        // SAFETY: `self.testbed` is a live testbed; the result is a newly allocated
        // string (or NULL), which `take_gstring` copies and frees.
        unsafe { take_gstring(umockdev_testbed_get_root_dir(self.testbed.as_ptr())) }
    }

    /// `umockdev_testbed_add_from_string`; the error is GLib's message.
    pub(crate) fn add_from_string(&self, data: &CStr) -> Result<(), String> {
        let mut error: *mut GError = ptr::null_mut();
        // SAFETY: live testbed, NUL-terminated string that outlives the call, and a
        // valid out-pointer for the GError, which starts NULL as GLib requires.
        let ok = unsafe { umockdev_testbed_add_from_string(self.testbed.as_ptr(), data.as_ptr(), &mut error) };
        if ok != 0 && error.is_null() {
            return Ok(());
        }
        if error.is_null() {
            return Err("umockdev_testbed_add_from_string failed without an error".to_owned());
        }
        // SAFETY: on failure GLib hands us an owned, valid GError whose `message` is a
        // NUL-terminated string (or NULL); we copy it before freeing the error once.
        let message = unsafe {
            let message = (*error).message;
            let text = if message.is_null() {
                "unknown error".to_owned()
            } else {
                CStr::from_ptr(message).to_string_lossy().into_owned()
            };
            g_error_free(error);
            text
        };
        Err(message)
    }

    pub(crate) fn remove_device(&self, syspath: &CStr) {
        // SAFETY: live testbed and a NUL-terminated string that outlives the call.
        unsafe { umockdev_testbed_remove_device(self.testbed.as_ptr(), syspath.as_ptr()) }
    }
}

impl Drop for RawTestbed {
    fn drop(&mut self) {
        // SAFETY: we own exactly one reference, released exactly once here. The last
        // unref runs the testbed's finaliser (removes its directory, unsets UMOCKDEV_DIR).
        unsafe { g_object_unref(self.testbed.as_ptr().cast()) }
    }
}

/// Copies and frees a string GLib allocated for us.
///
/// # Safety
/// `string` is NULL or a NUL-terminated string from `g_malloc`, owned by the caller.
unsafe fn take_gstring(string: *mut c_char) -> String {
    if string.is_null() {
        return String::new();
    }
    // SAFETY: per this function's contract.
    let text = unsafe { CStr::from_ptr(string) }.to_string_lossy().into_owned();
    // SAFETY: per this function's contract; freed once.
    unsafe { g_free(string.cast()) };
    text
}

/// A C string from Rust text; NUL bytes cannot reach libumockdev.
pub(crate) fn c_string(text: &str) -> Option<CString> {
    CString::new(text).ok()
}
