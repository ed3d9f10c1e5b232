//! The machinery between owned message types and flatbuffers: verification bounds, root
//! identifiers, and the `tables!` macro that declares an owned struct together with its
//! conversion to and from the generated table.
//!
//! Reading is always: check the 4-byte identifier, run the verifier with bounds tied to the
//! body's length, then convert the verified table into owned values. Nothing reads a field of
//! an unverified buffer. Rationale: flatbuffers accessors trust offsets; the verifier is what
//! makes a peer's bytes safe to follow.

use std::fmt;

use bytes::Bytes;
use flatbuffers::{
    FlatBufferBuilder, Follow, ForwardsUOffset, InvalidFlatbuffer, Vector, Verifiable,
    VerifierOptions, WIPOffset,
};

use crate::fb;

/// Nesting bound for the verifier. The schema has no recursive tables and nests at most five
/// deep (response, topic, partition, leader hint); the bound only has to exceed that.
pub const VERIFY_DEPTH_MAX: usize = 16;

/// How many times the verifier's apparent size may exceed the body's length. A builder shares
/// identical vtables between tables, so an honest body's apparent size exceeds its length by
/// the shared vtables: at most about 4x for this schema (a vtable of at most 28 bytes per table
/// of at least 9 bytes). The bound caps what a malicious body can make the decoder allocate by
/// pointing many references at one string or table.
pub const APPARENT_SIZE_FACTOR: usize = 8;

/// Smallest number of bytes a table takes in a body: its 4-byte vtable offset plus the 4-byte
/// reference to it. An honest body therefore holds at most `len / 8` tables; more visits mean
/// shared subtrees, which the verifier refuses beyond that count.
pub const TABLE_BYTES_MIN: usize = 8;

/// Verifier bounds for a body of `body_len` bytes. The body is at most the frame maximum
/// (`frame::FRAME_BYTES_MAX_DEFAULT` unless configured), so every bound is tied to it.
pub fn verifier_options(body_len: usize) -> VerifierOptions {
    VerifierOptions {
        max_depth: VERIFY_DEPTH_MAX,
        max_tables: body_len / TABLE_BYTES_MIN + 1,
        max_apparent_size: body_len.saturating_mul(APPARENT_SIZE_FACTOR),
        ignore_missing_null_terminator: false,
    }
}

/// The 4-byte flatbuffers file identifier that names a body's root type (bytes 4..8 of the
/// body). Requests are `Q` + three uppercase hex digits of the API key, responses `R` + the
/// same, `ErrorResponse` is `ERR0`. Rationale: a flatbuffer does not say which table its root
/// is, and a body of one type often verifies as another; the identifier makes the type explicit.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Identifier(pub [u8; 4]);

impl Identifier {
    pub const ERROR_RESPONSE: Identifier = Identifier(*b"ERR0");
    pub const CONSUMER_SUBSCRIPTION: Identifier = Identifier(*b"CSUB");
    pub const CONSUMER_ASSIGNMENT: Identifier = Identifier(*b"CASN");

    /// The identifier of the request body of API `key` (`key` <= 0xFFF).
    pub const fn request(key: u16) -> Identifier {
        Identifier::with_hex(b'Q', key)
    }

    /// The identifier of the response body of API `key` (`key` <= 0xFFF).
    pub const fn response(key: u16) -> Identifier {
        Identifier::with_hex(b'R', key)
    }

    const fn with_hex(first: u8, key: u16) -> Identifier {
        assert!(key <= 0xFFF, "API keys fit three hex digits");
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        Identifier([
            first,
            HEX[((key >> 8) & 0xF) as usize],
            HEX[((key >> 4) & 0xF) as usize],
            HEX[(key & 0xF) as usize],
        ])
    }

    /// As the `&str` that `FlatBufferBuilder::finish` takes. Every identifier built here is
    /// ASCII; an identifier read off the wire may not be, which is why this is not public.
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("identifiers built by this crate are ASCII")
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{}", std::ascii::escape_default(b))?;
        }
        Ok(())
    }
}

impl fmt::Debug for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identifier(\"{self}\")")
    }
}

/// Why a body is not a valid message of the expected type.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("body of {len} bytes is shorter than a flatbuffer root offset and identifier")]
    TooShort { len: usize },
    #[error("body is a \"{found}\" flatbuffer, expected \"{expected}\"")]
    WrongRootType {
        expected: Identifier,
        found: Identifier,
    },
    #[error("flatbuffer verification failed: {0}")]
    Invalid(#[from] InvalidFlatbuffer),
    #[error("{table}.{field}: value {value} is not valid")]
    InvalidValue {
        table: &'static str,
        field: &'static str,
        value: i64,
    },
}

impl DecodeError {
    /// The code a broker answers a request whose body failed to decode with.
    pub fn error_code(&self) -> crate::ErrorCode {
        crate::ErrorCode::InvalidRequest
    }
}

/// An owned type that maps to one generated flatbuffers table.
pub(crate) trait Table: Sized {
    /// The generated table type.
    type Fb<'a>: Follow<'a, Inner = Self::Fb<'a>> + Verifiable + 'a;
    /// Writes `self` (children first, then the table) and returns the table's offset.
    fn write<'b>(&self, fbb: &mut FlatBufferBuilder<'b>) -> WIPOffset<Self::Fb<'b>>;
    /// Converts a verified table into owned values.
    fn read(fb: Self::Fb<'_>) -> Result<Self, DecodeError>;
}

/// Checks the identifier and verifies `body` as a `T` root, with bounds from its length.
pub(crate) fn verify_root<'a, T: Table>(
    body: &'a [u8],
    expected: Identifier,
) -> Result<T::Fb<'a>, DecodeError> {
    verify_root_with::<T>(body, expected, &verifier_options(body.len()))
}

/// Like `verify_root`, with explicit verifier bounds.
pub(crate) fn verify_root_with<'a, T: Table>(
    body: &'a [u8],
    expected: Identifier,
    opts: &VerifierOptions,
) -> Result<T::Fb<'a>, DecodeError> {
    check_identifier(body, expected)?;
    Ok(flatbuffers::root_with_opts::<T::Fb<'a>>(opts, body)?)
}

/// Checks that `body` is long enough for a root and carries `expected` as its identifier.
pub(crate) fn check_identifier(body: &[u8], expected: Identifier) -> Result<(), DecodeError> {
    let Some(found) = body.get(4..8) else {
        return Err(DecodeError::TooShort { len: body.len() });
    };
    let found = Identifier(found.try_into().expect("4 bytes"));
    if found != expected {
        return Err(DecodeError::WrongRootType { expected, found });
    }
    Ok(())
}

/// Verifies and converts a body.
pub(crate) fn decode_root<T: Table>(body: &[u8], ident: Identifier) -> Result<T, DecodeError> {
    T::read(verify_root::<T>(body, ident)?)
}

/// Builds `t` as a finished flatbuffer with `ident` into `fbb` (reset first).
pub(crate) fn encode_root_with<'a, T: Table>(
    t: &T,
    ident: Identifier,
    fbb: &'a mut FlatBufferBuilder<'_>,
) -> &'a [u8] {
    fbb.reset();
    let root = t.write(fbb);
    fbb.finish(root, Some(ident.as_str()));
    fbb.finished_data()
}

/// Builds `t` as a finished flatbuffer with `ident`, without copying it out of the builder.
pub(crate) fn encode_root_bytes<T: Table>(t: &T, ident: Identifier) -> Bytes {
    let mut fbb = FlatBufferBuilder::new();
    let root = t.write(&mut fbb);
    fbb.finish(root, Some(ident.as_str()));
    let (buf, head) = fbb.collapse();
    Bytes::from(buf).slice(head..)
}

/// A value stored in a flatbuffers scalar field (an integer, a bool or an enum).
pub(crate) trait Scalar: Sized {
    /// What the generated accessor returns and the builder takes.
    type Raw: Copy;
    fn to_raw(&self) -> Self::Raw;
    /// The value for `raw`, or `raw` as i64 when it is not a valid value.
    fn from_raw(raw: Self::Raw) -> Result<Self, i64>;
}

macro_rules! identity_scalar {
    ($($t:ty),*) => {$(
        impl Scalar for $t {
            type Raw = $t;
            fn to_raw(&self) -> $t {
                *self
            }
            fn from_raw(raw: $t) -> Result<Self, i64> {
                Ok(raw)
            }
        }
    )*};
}
identity_scalar!(bool, u8, u16, u32, u64, i8, i16, i32, i64);

macro_rules! newtype_scalar {
    ($($t:ty => $raw:ty),*) => {$(
        impl Scalar for $t {
            type Raw = $raw;
            fn to_raw(&self) -> $raw {
                self.0
            }
            fn from_raw(raw: $raw) -> Result<Self, i64> {
                Ok(Self(raw))
            }
        }
    )*};
}
newtype_scalar!(
    crate::PartitionId => u32,
    crate::BrokerId => u32,
    crate::LeaderEpoch => u32,
    crate::Offset => u64,
    crate::TimestampMs => i64
);

impl Scalar for crate::ErrorCode {
    type Raw = fb::ErrorCode;
    fn to_raw(&self) -> fb::ErrorCode {
        fb::ErrorCode(self.as_u16())
    }
    /// Unknown codes (from a newer peer) read as `Unknown`, as `ErrorCode::from_u16` does.
    fn from_raw(raw: fb::ErrorCode) -> Result<Self, i64> {
        Ok(crate::ErrorCode::from_u16(raw.0))
    }
}

/// Declares an owned enum mirroring a schema enum; values outside it fail to decode.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident($fb:ident) default $default:ident {
            $( $(#[$vmeta:meta])* $variant:ident, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
        }

        impl Default for $name {
            fn default() -> Self {
                $name::$default
            }
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];
        }

        impl $crate::api::codec::Scalar for $name {
            type Raw = $crate::fb::$fb;
            fn to_raw(&self) -> $crate::fb::$fb {
                match self {
                    $( $name::$variant => $crate::fb::$fb::$variant, )*
                }
            }
            fn from_raw(raw: $crate::fb::$fb) -> Result<Self, i64> {
                match raw {
                    $( $crate::fb::$fb::$variant => Ok($name::$variant), )*
                    other => Err(i64::from(other.0)),
                }
            }
        }

        #[cfg(test)]
        impl $crate::api::codec::testing::Gen for $name {
            fn strategy() -> ::proptest::strategy::BoxedStrategy<Self> {
                use ::proptest::strategy::Strategy;
                ::proptest::sample::select($name::ALL).boxed()
            }
        }
    };
}
pub(crate) use wire_enum;

pub(crate) fn read_scalar<T: Scalar>(
    raw: T::Raw,
    table: &'static str,
    field: &'static str,
) -> Result<T, DecodeError> {
    T::from_raw(raw).map_err(|value| DecodeError::InvalidValue {
        table,
        field,
        value,
    })
}

pub(crate) fn read_opt_scalar<T: Scalar>(
    raw: Option<T::Raw>,
    table: &'static str,
    field: &'static str,
) -> Result<Option<T>, DecodeError> {
    raw.map(|r| read_scalar(r, table, field)).transpose()
}

pub(crate) fn read_scalars<'a, T>(
    v: Option<Vector<'a, T::Raw>>,
    table: &'static str,
    field: &'static str,
) -> Result<Vec<T>, DecodeError>
where
    T: Scalar,
    T::Raw: Follow<'a, Inner = T::Raw> + 'a,
{
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    v.iter().map(|r| read_scalar(r, table, field)).collect()
}

pub(crate) fn write_scalars<'b, T>(
    fbb: &mut FlatBufferBuilder<'b>,
    items: &[T],
) -> Option<WIPOffset<Vector<'b, T::Raw>>>
where
    T: Scalar,
    T::Raw: flatbuffers::Push<Output = T::Raw>,
{
    if items.is_empty() {
        return None;
    }
    let raw: Vec<T::Raw> = items.iter().map(Scalar::to_raw).collect();
    Some(fbb.create_vector(&raw))
}

pub(crate) fn read_bytes(v: Option<Vector<'_, u8>>) -> Vec<u8> {
    v.map(|v| v.bytes().to_vec()).unwrap_or_default()
}

pub(crate) fn write_bytes<'b>(
    fbb: &mut FlatBufferBuilder<'b>,
    bytes: &[u8],
) -> Option<WIPOffset<Vector<'b, u8>>> {
    if bytes.is_empty() {
        return None;
    }
    Some(fbb.create_vector(bytes))
}

pub(crate) fn read_strings<'a>(v: Vector<'a, ForwardsUOffset<&'a str>>) -> Vec<String> {
    v.iter().map(str::to_owned).collect()
}

pub(crate) fn write_strings<'b>(
    fbb: &mut FlatBufferBuilder<'b>,
    items: &[String],
) -> WIPOffset<Vector<'b, ForwardsUOffset<&'b str>>> {
    let offsets: Vec<_> = items.iter().map(|s| fbb.create_string(s)).collect();
    fbb.create_vector(&offsets)
}

pub(crate) fn read_tables<'a, T: Table>(
    v: Vector<'a, ForwardsUOffset<T::Fb<'a>>>,
) -> Result<Vec<T>, DecodeError> {
    v.iter().map(T::read).collect()
}

pub(crate) fn write_tables<'b, T: Table>(
    fbb: &mut FlatBufferBuilder<'b>,
    items: &[T],
) -> WIPOffset<Vector<'b, ForwardsUOffset<T::Fb<'b>>>> {
    let offsets: Vec<_> = items.iter().map(|t| t.write(fbb)).collect();
    fbb.create_vector(&offsets)
}

pub(crate) fn read_payloads(v: Option<Vector<'_, fb::PayloadRef>>) -> Vec<super::PayloadRef> {
    v.map(|v| v.iter().map(super::PayloadRef::from_fb).collect())
        .unwrap_or_default()
}

pub(crate) fn write_payloads<'b>(
    fbb: &mut FlatBufferBuilder<'b>,
    items: &[super::PayloadRef],
) -> Option<WIPOffset<Vector<'b, fb::PayloadRef>>> {
    if items.is_empty() {
        return None;
    }
    let raw: Vec<fb::PayloadRef> = items.iter().map(|p| p.to_fb()).collect();
    Some(fbb.create_vector(&raw))
}

/// How a field of each kind is read from a verified table.
macro_rules! field_read {
    (scalar, $v:expr, $t:expr, $f:expr) => {
        $crate::api::codec::read_scalar($v, $t, $f)?
    };
    (opt, $v:expr, $t:expr, $f:expr) => {
        $crate::api::codec::read_opt_scalar($v, $t, $f)?
    };
    (scalars, $v:expr, $t:expr, $f:expr) => {
        $crate::api::codec::read_scalars($v, $t, $f)?
    };
    (string, $v:expr, $t:expr, $f:expr) => {
        ::std::string::String::from($v)
    };
    (opt_string, $v:expr, $t:expr, $f:expr) => {
        $v.map(::std::string::String::from)
    };
    (strings, $v:expr, $t:expr, $f:expr) => {
        $v.map($crate::api::codec::read_strings).unwrap_or_default()
    };
    (opt_strings, $v:expr, $t:expr, $f:expr) => {
        $v.map($crate::api::codec::read_strings)
    };
    (bytes, $v:expr, $t:expr, $f:expr) => {
        $crate::api::codec::read_bytes($v)
    };
    (table, $v:expr, $t:expr, $f:expr) => {
        $crate::api::codec::Table::read($v)?
    };
    (opt_table, $v:expr, $t:expr, $f:expr) => {
        $v.map($crate::api::codec::Table::read).transpose()?
    };
    (tables, $v:expr, $t:expr, $f:expr) => {
        match $v {
            Some(v) => $crate::api::codec::read_tables(v)?,
            None => ::std::vec::Vec::new(),
        }
    };
    (opt_tables, $v:expr, $t:expr, $f:expr) => {
        match $v {
            Some(v) => Some($crate::api::codec::read_tables(v)?),
            None => None,
        }
    };
    (payload, $v:expr, $t:expr, $f:expr) => {
        $crate::api::PayloadRef::from_fb($v)
    };
    (payloads, $v:expr, $t:expr, $f:expr) => {
        $crate::api::codec::read_payloads($v)
    };
    (uuid, $v:expr, $t:expr, $f:expr) => {
        $crate::api::Uuid::from_fb($v)
    };
}
pub(crate) use field_read;

/// How a field of each kind is written into the builder before its table is started. The
/// result is what the generated `...Args` struct takes, except for structs (see `field_arg`).
macro_rules! field_write {
    (scalar, $fbb:ident, $v:expr) => {
        $crate::api::codec::Scalar::to_raw($v)
    };
    (opt, $fbb:ident, $v:expr) => {
        $v.as_ref().map($crate::api::codec::Scalar::to_raw)
    };
    (scalars, $fbb:ident, $v:expr) => {
        $crate::api::codec::write_scalars($fbb, $v)
    };
    (string, $fbb:ident, $v:expr) => {
        Some($fbb.create_string($v))
    };
    (opt_string, $fbb:ident, $v:expr) => {
        $v.as_deref().map(|s| $fbb.create_string(s))
    };
    (strings, $fbb:ident, $v:expr) => {
        if $v.is_empty() {
            None
        } else {
            Some($crate::api::codec::write_strings($fbb, $v))
        }
    };
    (opt_strings, $fbb:ident, $v:expr) => {
        $v.as_deref()
            .map(|v| $crate::api::codec::write_strings($fbb, v))
    };
    (bytes, $fbb:ident, $v:expr) => {
        $crate::api::codec::write_bytes($fbb, $v)
    };
    (table, $fbb:ident, $v:expr) => {
        Some($crate::api::codec::Table::write($v, $fbb))
    };
    (opt_table, $fbb:ident, $v:expr) => {
        $v.as_ref()
            .map(|t| $crate::api::codec::Table::write(t, $fbb))
    };
    (tables, $fbb:ident, $v:expr) => {
        if $v.is_empty() {
            None
        } else {
            Some($crate::api::codec::write_tables($fbb, $v))
        }
    };
    (opt_tables, $fbb:ident, $v:expr) => {
        $v.as_deref()
            .map(|v| $crate::api::codec::write_tables($fbb, v))
    };
    (payload, $fbb:ident, $v:expr) => {
        $v.to_fb()
    };
    (payloads, $fbb:ident, $v:expr) => {
        $crate::api::codec::write_payloads($fbb, $v)
    };
    (uuid, $fbb:ident, $v:expr) => {
        $v.to_fb()
    };
}
pub(crate) use field_write;

/// The `...Args` value for a field from what `field_write` produced: a reference for structs,
/// the value itself for everything else.
macro_rules! field_arg {
    (payload, $local:ident) => {
        Some(&$local)
    };
    (uuid, $local:ident) => {
        Some(&$local)
    };
    ($kind:ident, $local:ident) => {
        $local
    };
}
pub(crate) use field_arg;

/// Declares owned structs, each mapped to a generated table, with `Table` implemented.
///
/// ```text
/// pub struct Owned(fb::Table, fb::TableArgs) {
///     field: Type = kind,     // kind: scalar, opt, scalars, string, opt_string, strings,
///     ...                     // opt_strings, bytes, table, opt_table, tables, opt_tables,
/// }                           // payload, payloads, uuid
/// ```
/// The kind must match the schema: `string`, `table`, `payload` and `uuid` are `(required)`
/// fields there (a mismatch does not compile, as the accessor types differ). Plain vector kinds
/// write nothing for an empty vector and read an absent vector as empty; `opt_*` kinds keep
/// absent (None) and empty (Some(vec![])) apart.
macro_rules! tables {
    ($(
        $(#[$meta:meta])*
        pub struct $name:ident($fb:ident, $args:ident) {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty = $kind:ident ),* $(,)?
        }
    )*) => {$(
        $(#[$meta])*
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl $crate::api::codec::Table for $name {
            type Fb<'a> = $crate::fb::$fb<'a>;

            fn write<'b>(
                &self,
                fbb: &mut ::flatbuffers::FlatBufferBuilder<'b>,
            ) -> ::flatbuffers::WIPOffset<$crate::fb::$fb<'b>> {
                $( let $field = $crate::api::codec::field_write!($kind, fbb, &self.$field); )*
                $crate::fb::$fb::create(
                    fbb,
                    &$crate::fb::$args {
                        $( $field: $crate::api::codec::field_arg!($kind, $field), )*
                    },
                )
            }

            #[allow(unused_variables)]
            fn read(
                fb: $crate::fb::$fb<'_>,
            ) -> Result<Self, $crate::api::codec::DecodeError> {
                Ok($name {
                    $( $field: $crate::api::codec::field_read!(
                        $kind, fb.$field(), stringify!($name), stringify!($field)
                    ), )*
                })
            }
        }

        #[cfg(test)]
        impl $crate::api::codec::testing::Gen for $name {
            fn strategy() -> ::proptest::strategy::BoxedStrategy<Self> {
                #[allow(unused_imports)]
                use ::proptest::strategy::Strategy;
                let s = ::proptest::strategy::Just($name::default()).boxed();
                $(
                    let s = (s, <$ty as $crate::api::codec::testing::Gen>::strategy())
                        .prop_map(|(mut m, v)| {
                            m.$field = v;
                            m
                        })
                        .boxed();
                )*
                s
            }
        }
    )*};
}
pub(crate) use tables;

/// Proptest strategies for every owned type, with small collections so nested messages stay
/// small. Declared types get theirs from `tables!` and `wire_enum!`.
#[cfg(test)]
pub(crate) mod testing {
    use proptest::prelude::*;
    use proptest::strategy::BoxedStrategy;

    pub trait Gen: Sized + std::fmt::Debug {
        fn strategy() -> BoxedStrategy<Self>;
    }

    macro_rules! gen_any {
        ($($t:ty),*) => {$(
            impl Gen for $t {
                fn strategy() -> BoxedStrategy<Self> {
                    any::<$t>().boxed()
                }
            }
        )*};
    }
    gen_any!(bool, u8, u16, u32, u64, i8, i16, i32, i64);

    macro_rules! gen_newtype {
        ($($t:ty => $raw:ty),*) => {$(
            impl Gen for $t {
                fn strategy() -> BoxedStrategy<Self> {
                    any::<$raw>().prop_map(<$t>::from).boxed()
                }
            }
        )*};
    }
    gen_newtype!(
        crate::PartitionId => u32,
        crate::BrokerId => u32,
        crate::LeaderEpoch => u32,
        crate::Offset => u64,
        crate::TimestampMs => i64
    );

    impl Gen for crate::ErrorCode {
        fn strategy() -> BoxedStrategy<Self> {
            proptest::sample::select(crate::ErrorCode::ALL).boxed()
        }
    }

    impl Gen for String {
        fn strategy() -> BoxedStrategy<Self> {
            // Any Unicode, including NUL and multi-byte characters.
            prop_oneof![Just(String::new()), ".{0,12}"].boxed()
        }
    }

    impl<T: Gen + 'static> Gen for Vec<T> {
        fn strategy() -> BoxedStrategy<Self> {
            proptest::collection::vec(T::strategy(), 0..4).boxed()
        }
    }

    impl<T: Gen + 'static> Gen for Option<T> {
        fn strategy() -> BoxedStrategy<Self> {
            proptest::option::of(T::strategy()).boxed()
        }
    }
}
