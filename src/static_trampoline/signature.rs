//! The C function-pointer types a pool can hand out, and how a trampoline
//! calls the Rust closure behind one.

/// Keeps [`Signature`] closed: the pool's lifetime erasure in
/// [`Pool::scope`](super::Pool::scope) is argued for these impls only.
mod sealed {
    pub trait Sealed {}
}

/// A C function-pointer type that a [`Pool`](super::Pool) can hand out:
/// `extern "C" fn(A, B, …) -> R` or `unsafe extern "C" fn(A, B, …) -> R`
/// with up to 8 arguments.
///
/// It ties the pointer type to the closures that serve it: `dyn FnMut(A, B,
/// …) -> R + Send`. It is implemented here for every such pointer type and
/// cannot be implemented elsewhere;
/// [`static_callbacks!`](crate::static_callbacks) names it for you.
///
/// Pointer types with higher-ranked lifetimes (`extern "C" fn(&T)`) are not
/// covered: C signatures use raw pointers.
///
/// ```
/// use std::ffi::c_int;
/// use handle_registry::static_trampoline::Signature;
///
/// type Cmp = unsafe extern "C" fn(*const u8, *const u8) -> c_int;
/// let mut calls = 0;
/// let mut f = |a: *const u8, b: *const u8| {
///     calls += 1;
///     (a as usize).cmp(&(b as usize)) as c_int
/// };
/// let order = <Cmp as Signature>::invoke(&mut f, (std::ptr::null(), std::ptr::null()));
/// assert_eq!((order, calls), (0, 1));
/// ```
pub trait Signature: sealed::Sealed + Copy + Send + Sync + 'static {
    /// The arguments, as a tuple: `(A, B, …)`.
    type Args;
    /// The return type (`()` for C `void`).
    type Ret;
    /// The closures that serve calls: `dyn FnMut(A, B, …) -> Ret + Send + 'a`.
    type Closure<'a>: ?Sized + Send + 'a;

    /// Calls `callback` with `args`, spread out.
    ///
    /// ```
    /// use handle_registry::static_trampoline::Signature;
    ///
    /// let mut seen = Vec::new();
    /// let mut f = |depth: i32| seen.push(depth);
    /// <extern "C" fn(i32) as Signature>::invoke(&mut f, (3,));
    /// assert_eq!(seen, [3]);
    /// ```
    fn invoke(callback: &mut Self::Closure<'_>, args: Self::Args) -> Self::Ret;
}

/// A [`Signature`] whose pointer type is a safe `extern "C" fn`: anyone may
/// call it with any arguments, so its closures must accept any arguments.
///
/// Only pools of these offer the safe [`Pool::dispatch`](super::Pool::dispatch).
/// Declare an `unsafe extern "C" fn` pool when the closures rely on what
/// the C library promises about the arguments (a pointer is valid, an
/// index is in bounds): that is almost always the case for pointer
/// arguments.
///
/// ```
/// use handle_registry::static_trampoline::SafeSignature;
///
/// fn only_safe<F: SafeSignature>() {}
/// only_safe::<extern "C" fn(i32, i32)>();
/// ```
pub trait SafeSignature: Signature {}

macro_rules! impl_signature {
    ($($arg:ident)*) => {
        impl<$($arg: 'static,)* R: 'static> sealed::Sealed for extern "C" fn($($arg),*) -> R {}
        impl<$($arg: 'static,)* R: 'static> sealed::Sealed for unsafe extern "C" fn($($arg),*) -> R {}
        impl<$($arg: 'static,)* R: 'static> SafeSignature for extern "C" fn($($arg),*) -> R {}
        impl_signature!(@one [extern "C" fn($($arg),*) -> R] $($arg)*);
        impl_signature!(@one [unsafe extern "C" fn($($arg),*) -> R] $($arg)*);
    };
    (@one [$($fnty:tt)*] $($arg:ident)*) => {
        impl<$($arg: 'static,)* R: 'static> Signature for $($fnty)* {
            type Args = ($($arg,)*);
            type Ret = R;
            type Closure<'a> = dyn FnMut($($arg),*) -> R + Send + 'a;

            #[allow(non_snake_case)]
            fn invoke(callback: &mut Self::Closure<'_>, args: Self::Args) -> R {
                let ($($arg,)*) = args;
                callback($($arg),*)
            }
        }
    };
}

impl_signature!();
impl_signature!(A);
impl_signature!(A B);
impl_signature!(A B C);
impl_signature!(A B C D);
impl_signature!(A B C D E);
impl_signature!(A B C D E G);
impl_signature!(A B C D E G H);
impl_signature!(A B C D E G H I);

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_signature<F: Signature>() {}
    fn assert_safe<F: SafeSignature>() {}

    #[test]
    fn every_arity_up_to_eight_is_covered() {
        assert_safe::<extern "C" fn()>();
        assert_safe::<extern "C" fn(u8, u16, u32, u64, i8, i16, i32, i64) -> f64>();
        assert_signature::<unsafe extern "C" fn(*mut u8) -> *mut u8>();
        assert_signature::<unsafe extern "C" fn(u8, u8, u8, u8, u8, u8, u8, u8)>();
    }

    #[test]
    fn invoke_spreads_the_tuple_in_order() {
        let mut f = |a: u8, b: u16, c: u32, d: u64| {
            u64::from(a) + u64::from(b) * 10 + u64::from(c) * 100 + d * 1000
        };
        let got = <unsafe extern "C" fn(u8, u16, u32, u64) -> u64 as Signature>::invoke(
            &mut f,
            (1, 2, 3, 4),
        );
        assert_eq!(got, 4321);
    }
}
