//! Values between serde_json and QuickJS, converted directly: no JSON text is written and
//! parsed again on the way, which was most of the cost of a trivial hook.
//!
//! Owns the two conversions and `JSON.stringify`'s rules for what has no JSON form (functions,
//! symbols and `undefined` left out of objects and `null` in arrays, non-finite numbers as
//! `null`, `toJSON` honoured, BigInt refused). Does not decide which values cross: that is the
//! engine's (`engine.rs`).

use rquickjs::atom::PredefinedAtom;
use rquickjs::function::This;
use rquickjs::{Array, Ctx, Exception, Object, Type, Value};
use serde_json::{Map, Number, Value as Json};

/// Deeper is refused: it is a cycle or a value no JSON parser here would take back (serde_json
/// stops at the same depth), and the conversion recurses on the host's stack.
pub const MAX_DEPTH: usize = 128;

/// `value` as a JavaScript value of `ctx`.
pub fn to_js<'js>(ctx: &Ctx<'js>, value: &Json) -> rquickjs::Result<Value<'js>> {
    to_js_at(ctx, value, 0)
}

fn to_js_at<'js>(ctx: &Ctx<'js>, value: &Json, depth: usize) -> rquickjs::Result<Value<'js>> {
    Ok(match value {
        Json::Null => Value::new_null(ctx.clone()),
        Json::Bool(b) => Value::new_bool(ctx.clone(), *b),
        Json::Number(n) => match n.as_i64().and_then(|i| i32::try_from(i).ok()) {
            Some(i) => Value::new_int(ctx.clone(), i),
            None => Value::new_float(ctx.clone(), n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => rquickjs::String::from_str(ctx.clone(), s)?.into_value(),
        Json::Array(items) => {
            let depth = deeper(ctx, depth)?;
            let array = Array::new(ctx.clone())?;
            for (i, item) in items.iter().enumerate() {
                array.set(i, to_js_at(ctx, item, depth)?)?;
            }
            array.into_value()
        }
        Json::Object(map) => {
            let depth = deeper(ctx, depth)?;
            let object = Object::new(ctx.clone())?;
            for (key, item) in map {
                object.set(key.as_str(), to_js_at(ctx, item, depth)?)?;
            }
            object.into_value()
        }
    })
}

/// `map` as a JavaScript object of `ctx`.
pub fn map_to_js<'js>(ctx: &Ctx<'js>, map: &Map<String, Json>) -> rquickjs::Result<Value<'js>> {
    let object = Object::new(ctx.clone())?;
    for (key, item) in map {
        object.set(key.as_str(), to_js_at(ctx, item, 1)?)?;
    }
    Ok(object.into_value())
}

/// `value` as JSON, as `JSON.parse(JSON.stringify(value))` would give it; `undefined` (and
/// anything else with no JSON form) at the top is `null`.
pub fn from_js<'js>(ctx: &Ctx<'js>, value: Value<'js>) -> rquickjs::Result<Json> {
    from_js_with(ctx, value, &|_| None)
}

/// As [`from_js`], with `resolve` asked for every string that starts with a NUL: what it
/// answers stands in for the string (the host's markers for values it kept, see `lazy.rs`).
pub fn from_js_with<'js>(
    ctx: &Ctx<'js>,
    value: Value<'js>,
    resolve: Resolve<'_>,
) -> rquickjs::Result<Json> {
    Ok(from_js_at(ctx, value, 0, true, resolve)?.unwrap_or(Json::Null))
}

type Resolve<'a> = &'a dyn Fn(&str) -> Option<Json>;

/// `None` for what JSON leaves out (a function, a symbol, `undefined`).
fn from_js_at<'js>(
    ctx: &Ctx<'js>,
    value: Value<'js>,
    depth: usize,
    to_json: bool,
    resolve: Resolve<'_>,
) -> rquickjs::Result<Option<Json>> {
    // Objects first: `type_of` would ask an object six questions before saying so.
    if let Some(object) = value.as_object() {
        if value.is_function() {
            return Ok(None);
        }
        let depth = deeper(ctx, depth)?;
        if to_json {
            // A `toJSON` method (Date has one) stands in for the value, once; a throwing getter
            // fails the conversion, as in JSON.stringify.
            let method: Value = object.get(PredefinedAtom::ToJSON)?;
            if let Some(method) = method.as_function() {
                let replaced: Value = method.call((This(object.clone()),))?;
                return from_js_at(ctx, replaced, depth - 1, false, resolve);
            }
        }
        return Ok(Some(if let Some(array) = value.as_array() {
            let mut items = Vec::with_capacity(array.len());
            for item in array.iter::<Value>() {
                items.push(from_js_at(ctx, item?, depth, true, resolve)?.unwrap_or(Json::Null));
            }
            Json::Array(items)
        } else {
            let mut map = Map::new();
            // Keys as JS strings: an atom's C string would end at a NUL in the key.
            for prop in object.props::<rquickjs::String, Value>() {
                let (key, item) = prop?;
                if let Some(item) = from_js_at(ctx, item, depth, true, resolve)? {
                    map.insert(key.to_string()?, item);
                }
            }
            Json::Object(map)
        }));
    }
    Ok(Some(match value.type_of() {
        Type::Null => Json::Null,
        Type::Bool => Json::Bool(value.as_bool().unwrap_or_default()),
        Type::Int => Json::from(value.as_int().unwrap_or_default()),
        Type::Float => number(value.as_float().unwrap_or(f64::NAN)),
        Type::String => {
            let text = value
                .into_string()
                .map(|s| s.to_string())
                .transpose()?
                .unwrap_or_default();
            match text.starts_with('\0').then(|| resolve(&text)).flatten() {
                Some(kept) => kept,
                None => Json::String(text),
            }
        }
        Type::BigInt => {
            return Err(Exception::throw_type(ctx, "a BigInt has no JSON form"));
        }
        // `undefined`, symbols and anything else without a JSON form.
        _ => return Ok(None),
    }))
}

/// A JS number as JSON: integral values as integers (`3`, not `3.0`), non-finite ones as
/// `null`, as `JSON.stringify` writes them.
fn number(f: f64) -> Json {
    // Every integral f64 below these bounds is exact as an integer; JSON.stringify writes it
    // in digits, which serde_json reads back as i64 or u64 too.
    const I64: f64 = 9_223_372_036_854_775_808.0; // 2^63
    const U64: f64 = 18_446_744_073_709_551_616.0; // 2^64
    if f.is_finite() && f.fract() == 0.0 {
        if f.abs() < I64 {
            return Json::from(f as i64);
        }
        if f > 0.0 && f < U64 {
            return Json::from(f as u64);
        }
    }
    Number::from_f64(f).map(Json::Number).unwrap_or(Json::Null)
}

fn deeper(ctx: &Ctx<'_>, depth: usize) -> rquickjs::Result<usize> {
    if depth >= MAX_DEPTH {
        return Err(Exception::throw_type(
            ctx,
            &format!("the value is circular or nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    Ok(depth + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rquickjs::{CatchResultExt, Context, Runtime};
    use serde_json::json;

    fn with<T>(f: impl FnOnce(&Ctx<'_>) -> T) -> T {
        let runtime = Runtime::new().unwrap();
        let context = Context::full(&runtime).unwrap();
        context.with(|ctx| f(&ctx))
    }

    /// What the old path gave: the text `JSON.stringify` writes, parsed by serde.
    fn via_text<'js>(ctx: &Ctx<'js>, value: Value<'js>) -> Json {
        match ctx.json_stringify(value).unwrap() {
            Some(text) => serde_json::from_str(&text.to_string().unwrap()).unwrap(),
            None => Json::Null,
        }
    }

    fn eval_both(source: &str) -> (Json, Json) {
        with(|ctx| {
            let value: Value = ctx.eval(source).unwrap();
            (from_js(ctx, value.clone()).unwrap(), via_text(ctx, value))
        })
    }

    #[test]
    fn js_values_convert_as_json_stringify_writes_them() {
        for source in [
            "({a: 1, b: 'x', c: [1, 2.5, null, true], d: {e: {}}})",
            "({f() {}, u: undefined, s: Symbol('k'), n: NaN, i: -Infinity, z: -0})",
            "[undefined, function () {}, Symbol('k'), 1e21, 0.1 + 0.2, 2 ** 53, -(2 ** 31)]",
            "({2: 'b', 1: 'a', x: 'c'})",
            "({when: new Date(0), nested: {toJSON() { return 'custom'; }}})",
            "Object.defineProperty({shown: 1}, 'hidden', {value: 2, enumerable: false})",
            "new Proxy({a: 1}, {})",
            "'just a string'",
            "42",
            "undefined",
            "[new Error('e'), Promise.resolve(1)]",
            "({'k\\u0000\\ud83d\\ude00': 'v\\n\\u2028'})",
        ] {
            let (direct, text) = eval_both(source);
            assert_eq!(direct, text, "{source}");
        }
    }

    #[test]
    fn a_cycle_or_a_bigint_throws_a_type_error() {
        with(|ctx| {
            for source in ["const o = {}; o.self = o; o", "({n: 10n})"] {
                let value: Value = ctx.eval(source).unwrap();
                let error = from_js(ctx, value).catch(ctx).unwrap_err().to_string();
                assert!(
                    error.contains("TypeError")
                        || error.contains("JSON")
                        || error.contains("circular"),
                    "{source}: {error}"
                );
            }
        });
    }

    #[test]
    fn too_deep_json_is_refused_not_overflowed() {
        let mut deep = json!(1);
        for _ in 0..MAX_DEPTH + 1 {
            deep = json!([deep]);
        }
        with(|ctx| {
            let error = to_js(ctx, &deep).catch(ctx).unwrap_err().to_string();
            assert!(error.contains("nested deeper"), "{error}");
        });
    }

    #[test]
    fn large_integers_and_floats_survive_the_trip() {
        let value = json!({"big": 9_007_199_254_740_993_i64, "neg": -5_000_000_000_i64, "f": 1.5, "u": u64::MAX});
        with(|ctx| {
            let js = to_js(ctx, &value).unwrap();
            let back = from_js(ctx, js.clone()).unwrap();
            assert_eq!(back, via_text(ctx, js));
            assert_eq!(back["neg"], json!(-5_000_000_000_i64));
            assert_eq!(back["f"], json!(1.5));
        });
    }

    fn arb_json() -> impl Strategy<Value = Json> {
        let leaf = prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::Bool),
            any::<i32>().prop_map(Json::from),
            (-1e12f64..1e12)
                .prop_map(|f| Number::from_f64(f).map(Json::Number).unwrap_or(Json::Null)),
            ".{0,12}".prop_map(Json::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
                prop::collection::vec((".{0,6}", inner), 0..6)
                    .prop_map(|kv| Json::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Into JS and back gives what the JSON text round trip gives, key order included.
        #[test]
        fn round_trip_matches_the_json_text_path(value in arb_json()) {
            with(|ctx| {
                let js = to_js(ctx, &value).unwrap();
                let text = ctx.json_parse(serde_json::to_string(&value).unwrap()).unwrap();
                prop_assert_eq!(from_js(ctx, js).unwrap(), via_text(ctx, text));
                Ok(())
            })?;
        }
    }
}
