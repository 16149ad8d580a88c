//! [`static_callbacks!`](crate::static_callbacks): declaring a pool.

/// Declares [`Pool`](crate::static_trampoline::Pool)s of static
/// trampolines: plain C function pointers, without `user_data`, that call
/// Rust closures.
///
/// ```text
/// static_callbacks! {
///     /// docs
///     $vis static $NAME: [$(unsafe)? extern "C" fn($($arg: $Type),*) $(-> $Ret)?; $N] $(else $fallback)?;
///     …
/// }
/// ```
///
/// * `$N` is the number of slots, a constant expression from 1 to
///   [`MAX_POOL_SIZE`](crate::static_trampoline::MAX_POOL_SIZE), or `_` for
///   [`DEFAULT_POOL_SIZE`](crate::static_trampoline::DEFAULT_POOL_SIZE).
///   Each slot is one more function in the binary and one more closure that
///   can be bound at once; see the
///   [module docs](crate::static_trampoline#choosing-the-pool-size).
/// * `$fallback` is what a call returns when it has no closure to run: the
///   slot is free, its closure was unbound, the call re-enters the closure
///   on the same thread, or a call of it panicked. It is evaluated in the
///   trampoline, where the arguments are in scope. Without `else`, it is
///   `Default::default()`.
/// * Declare `unsafe extern "C" fn` when the closures rely on what C
///   promises about the arguments (a pointer is valid): the trampolines
///   are then unsafe to call. A safe `extern "C" fn` can be called by
///   anyone with anything, and its closures must cope.
/// * The argument names are required; at most 8 arguments.
///
/// The static is a `Pool<$fn_type, $N>`. The generated code holds one
/// `unsafe` block, in trampolines of `unsafe extern "C" fn` pools (it calls
/// [`Pool::dispatch_unchecked`](crate::static_trampoline::Pool::dispatch_unchecked)
/// with the arguments C passed).
///
/// ```
/// use std::ffi::c_int;
/// use handle_registry::static_callbacks;
///
/// static_callbacks! {
///     /// Event hooks that C calls (from ordinary code, not a real signal
///     /// handler: trampolines are not async-signal-safe) with a number only.
///     pub static ON_SIGNAL: [extern "C" fn(signum: c_int); 4];
///
///     /// Predicates over byte strings; `1` (keep going) when unbound.
///     static VISIT: [unsafe extern "C" fn(p: *const u8, len: usize) -> c_int; _] else 1;
/// }
///
/// let mut count = 0;
/// ON_SIGNAL
///     .scope(Box::new(|_signum| count += 1), |handler| {
///         handler(10);
///         handler(12);
///     })
///     .unwrap();
/// assert_eq!(count, 2);
///
/// let visit = VISIT.fn_ptr(0).unwrap(); // slot 0, unbound
/// // SAFETY: the pointer is valid for `len` bytes.
/// assert_eq!(unsafe { visit(b"x".as_ptr(), 1) }, 1);
/// ```
///
/// A size out of range is a compile error:
///
/// ```compile_fail,E0080
/// handle_registry::static_callbacks! {
///     /// One slot too many.
///     static TOO_MANY: [extern "C" fn(); 65];
/// }
/// ```
#[macro_export]
macro_rules! static_callbacks {
    () => {};
    (
        $(#[$attr:meta])*
        $vis:vis static $name:ident : [ $($sig:tt)* ] $(else $fallback:expr)? ;
        $($rest:tt)*
    ) => {
        $crate::static_callbacks!(
            @parse [$(#[$attr])*] [$vis] [$name] [$($fallback)?] $($sig)*
        );
        $crate::static_callbacks!($($rest)*);
    };
    (
        @parse $attrs:tt $vis:tt $name:tt $fallback:tt
        unsafe extern "C" fn ( $($arg:ident : $ty:ty),* $(,)? ) $(-> $ret:ty)? ; $($size:tt)+
    ) => {
        $crate::static_callbacks!(
            @size [unsafe] $attrs $vis $name $fallback [$($arg : $ty),*] [$($ret)?] $($size)+
        );
    };
    (
        @parse $attrs:tt $vis:tt $name:tt $fallback:tt
        extern "C" fn ( $($arg:ident : $ty:ty),* $(,)? ) $(-> $ret:ty)? ; $($size:tt)+
    ) => {
        $crate::static_callbacks!(
            @size [] $attrs $vis $name $fallback [$($arg : $ty),*] [$($ret)?] $($size)+
        );
    };
    (@size $unsafety:tt $attrs:tt $vis:tt $name:tt $fallback:tt $args:tt $ret:tt _) => {
        $crate::static_callbacks!(
            @emit $unsafety $attrs $vis $name $fallback $args $ret
            [$crate::static_trampoline::DEFAULT_POOL_SIZE]
        );
    };
    (@size $unsafety:tt $attrs:tt $vis:tt $name:tt $fallback:tt $args:tt $ret:tt $size:expr) => {
        $crate::static_callbacks!(@emit $unsafety $attrs $vis $name $fallback $args $ret [$size]);
    };
    (@fallback []) => { ::core::default::Default::default() };
    (@fallback [$fallback:expr]) => { $fallback };
    (@call [] $name:ident $args:expr) => {
        $name.dispatch(__SLOT, $args)
    };
    (@call [unsafe] $name:ident $args:expr) => {
        // SAFETY: C calls this trampoline through a pointer of the pool's
        // `unsafe extern "C" fn` type, so it vouches for the arguments.
        unsafe { $name.dispatch_unchecked(__SLOT, $args) }
    };
    (
        @emit [$($unsafety:tt)?] [$(#[$attr:meta])*] [$vis:vis] [$name:ident] $fallback:tt
        [$($arg:ident : $ty:ty),*] [$($ret:ty)?] [$size:expr]
    ) => {
        $(#[$attr])*
        $vis static $name: $crate::static_trampoline::Pool<
            $($unsafety)? extern "C" fn($($ty),*) $(-> $ret)?,
            { $size },
        > = {
            $($unsafety)? extern "C" fn trampoline<const __SLOT: usize>($($arg: $ty),*) $(-> $ret)? {
                match $crate::static_callbacks!(@call [$($unsafety)?] $name ($($arg,)*)) {
                    ::core::option::Option::Some(ret) => ret,
                    ::core::option::Option::None => $crate::static_callbacks!(@fallback $fallback),
                }
            }
            $crate::static_trampoline::Pool::__new(
                ::core::stringify!($name),
                &$crate::__static_callbacks_table!(
                    trampoline,
                    $($unsafety)? extern "C" fn($($ty),*) $(-> $ret)?,
                    $size
                ),
            )
        };
    };
}

/// The trampoline table of a pool: `f::<i>` for every slot `i` below `n`.
///
/// Always [`MAX_POOL_SIZE`](crate::static_trampoline::MAX_POOL_SIZE) long,
/// but entries past `n` name `f::<0>` again, so only `n` distinct functions
/// are instantiated; `Pool::__new` keeps the first `n`.
#[doc(hidden)]
#[macro_export]
macro_rules! __static_callbacks_table {
    ($f:ident, $fnty:ty, $n:expr) => {
        $crate::__static_callbacks_table!(@ $f, $fnty, $n, [
            0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15
            16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
            32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47
            48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63
        ])
    };
    (@ $f:ident, $fnty:ty, $n:expr, [$($i:literal)*]) => {{
        let table: [$fnty; $crate::static_trampoline::MAX_POOL_SIZE] =
            [$($f::<{ if $i < $n { $i } else { 0 } }>),*];
        table
    }};
}
