//! Where a route's site and product come from.

use super::fields::{FieldError, Fields};
use crate::rejection::{BodyError, Rejection};
use http::request::Parts;
use std::borrow::Cow;
use std::{fmt, sync::Arc};

/// Where the guard finds the site or the product in a request. Configured per route.
///
/// ```
/// use upgrade_guard::Source;
///
/// // The provision API's own form: `siteurl=…&plan=…` (urlencoded, multipart or JSON).
/// let site = Source::field("siteurl");
/// // `POST /sites/{site}/plans`: the site is a path parameter.
/// let site = Source::path("/sites/{site}/plans", "site");
/// // A query parameter or a body field, whichever the request uses.
/// let product = Source::query("plan").or(Source::field("plan"));
/// // Anything else: a closure over the request head (headers, URI, extensions).
/// let site = Source::from_fn(|parts| {
///     parts.headers.get("x-site").and_then(|v| v.to_str().ok()).map(str::to_owned)
/// });
/// ```
#[derive(Clone)]
pub struct Source {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Field(Box<str>),
    Query(Box<str>),
    Path {
        template: Arc<[Segment]>,
        param: usize,
    },
    Fn(Arc<SourceFn>),
    FirstOf(Box<[Source]>),
}

/// A user closure over the request head.
type SourceFn = dyn Fn(&Parts) -> Option<String> + Send + Sync;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    Param(Box<str>),
}

/// A value a source found, `Ok(None)` when the request has none.
pub(super) type Found<'a> = Result<Option<Cow<'a, str>>, Rejection>;

impl Source {
    /// A field of the body, read as WordPress.com reads it: an `application/x-www-form-urlencoded`
    /// form (tried as JSON first), a `multipart/form-data` form, a JSON object (top-level key; a
    /// string or an integer; `null` is no value), or, for other content types, a form.
    ///
    /// The guard reads every body whole (within the limit) before it holds a site. A field that
    /// appears twice is refused: the provision endpoint would use another copy than the one
    /// checked. The query string's parameter of the same name is read too: one value in either
    /// place is that value, two different values are refused (WordPress.com's `input()` reads
    /// only the body, but an endpoint may also read its query arguments).
    #[must_use]
    pub fn field(name: impl Into<String>) -> Self {
        Self {
            kind: Kind::Field(name.into().into_boxed_str()),
        }
    }

    /// A query-string parameter.
    ///
    /// A query WordPress.com would read otherwise than it was sent is refused (400
    /// `invalid_body`): one holding a character `esc_url()` removes (`{`, `}`, `^`, `\`, the
    /// backtick), or `%0a`/`%0d`, which it removes too. `?pl%0Aan=x` is `plan=x` to WordPress.com.
    #[must_use]
    pub fn query(name: impl Into<String>) -> Self {
        Self {
            kind: Kind::Query(name.into().into_boxed_str()),
        }
    }

    /// The path parameter `param` of `template`, written as the route is
    /// (`"/sites/{site}/plans"`): literal segments and `{name}` segments.
    ///
    /// The guard matches the template against the request's path itself, so it works in any
    /// framework; under axum's `nest`, write the path as the nested router sees it. The
    /// parameter is taken as it appears in the path, not percent-decoded: a `%` in a site is
    /// refused as `invalid_site`.
    ///
    /// # Panics
    ///
    /// When `template` has no `{param}` segment: a route misconfiguration, found at start-up.
    #[must_use]
    pub fn path(template: &str, param: &str) -> Self {
        let template: Arc<[Segment]> = template
            .split('/')
            .filter(|s| !s.is_empty())
            .map(
                |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(name) => Segment::Param(name.into()),
                    None => Segment::Literal(segment.into()),
                },
            )
            .collect();
        let param = template
            .iter()
            .position(|segment| *segment == Segment::Param(param.into()))
            .unwrap_or_else(|| panic!("the path template has no `{{{param}}}` segment"));
        Self {
            kind: Kind::Path { template, param },
        }
    }

    /// A value computed from the request head by `f`; `None` means the request has none.
    #[must_use]
    pub fn from_fn<F>(f: F) -> Self
    where
        F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    {
        Self {
            kind: Kind::Fn(Arc::new(f)),
        }
    }

    /// This source or `other`, whichever the request uses. A request that names a value in both
    /// places is accepted only when the two are the same: otherwise the guard could check one
    /// while the handler provisions the other, so it answers 400 `invalid_body`.
    #[must_use]
    pub fn or(self, other: Source) -> Self {
        let mut sources = match self.kind {
            Kind::FirstOf(sources) => sources.into_vec(),
            kind => vec![Self { kind }],
        };
        sources.push(other);
        Self {
            kind: Kind::FirstOf(sources.into_boxed_slice()),
        }
    }

    /// What this source reads, for messages: "field `plan`".
    pub(super) fn describe(&self) -> String {
        match &self.kind {
            Kind::Field(name) => format!("field `{name}`"),
            Kind::Query(name) => format!("query parameter `{name}`"),
            Kind::Path { template, param } => match &template[*param] {
                Segment::Param(name) | Segment::Literal(name) => format!("path parameter `{name}`"),
            },
            Kind::Fn(_) => "the value".into(),
            Kind::FirstOf(sources) => sources.first().map_or_else(String::new, Source::describe),
        }
    }

    /// Whether reading this source needs the body.
    pub(super) fn needs_body(&self) -> bool {
        match &self.kind {
            Kind::Field(_) => true,
            Kind::FirstOf(sources) => sources.iter().any(Source::needs_body),
            Kind::Query(_) | Kind::Path { .. } | Kind::Fn(_) => false,
        }
    }

    /// Finds the value in the request head and, when the route reads it, the body's fields.
    pub(super) fn find<'a>(&self, parts: &'a Parts, fields: Option<&'a Fields>) -> Found<'a> {
        match &self.kind {
            Kind::Field(name) => {
                let body =
                    field_value(fields.map(|f| f.get(name)).transpose().map(Option::flatten))?;
                let query = super::query::read(&parts.uri)?;
                let query = field_value(query.get(name))?.map(|v| Cow::Owned(v.into_owned()));
                match (body, query) {
                    (Some(body), Some(query)) if body != query => {
                        Err(Rejection::InvalidBody(BodyError::new(format!(
                            "field `{name}` has one value in the body ({body:?}) and another in the query string ({query:?})"
                        ))))
                    }
                    (body, query) => Ok(body.or(query)),
                }
            }
            Kind::Query(name) => {
                let query = super::query::read(&parts.uri)?;
                field_value(query.get(name)).map(|v| v.map(|v| v.into_owned().into()))
            }
            Kind::Path { template, param } => {
                Ok(match_path(template, *param, parts.uri.path()).map(Into::into))
            }
            Kind::Fn(f) => Ok(f(parts).map(Into::into)),
            Kind::FirstOf(sources) => {
                // Every place is read: a request naming two different values would have the
                // guard check one while the handler provisions the other.
                let mut found: Option<Cow<'a, str>> = None;
                for source in sources {
                    match (source.find(parts, fields)?, &found) {
                        (Some(value), Some(first)) if value != *first => {
                            return Err(Rejection::InvalidBody(BodyError::new(format!(
                                "the request gives two different values ({first:?}, {value:?}) for one setting"
                            ))));
                        }
                        (Some(value), None) => found = Some(value),
                        _ => {}
                    }
                }
                Ok(found)
            }
        }
    }
}

fn field_value(found: Result<Option<Cow<'_, str>>, FieldError>) -> Found<'_> {
    let value = found.map_err(|e| Rejection::InvalidBody(BodyError::new(e.to_string())))?;
    // An empty value names nothing, like an absent one.
    Ok(value.filter(|v| !v.is_empty()))
}

fn match_path<'a>(template: &[Segment], param: usize, path: &'a str) -> Option<&'a str> {
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    let mut found = None;
    for (index, expected) in template.iter().enumerate() {
        let segment = segments.next()?;
        match expected {
            Segment::Literal(literal) if **literal != *segment => return None,
            Segment::Literal(_) => {}
            Segment::Param(_) if index == param => found = Some(segment),
            Segment::Param(_) => {}
        }
    }
    if segments.next().is_some() {
        return None;
    }
    found.filter(|v| !v.is_empty())
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Field(name) => f.debug_tuple("Field").field(name).finish(),
            Kind::Query(name) => f.debug_tuple("Query").field(name).finish(),
            Kind::Path { template, param } => f
                .debug_struct("Path")
                .field("template", template)
                .field("param", param)
                .finish(),
            Kind::Fn(_) => f.write_str("Fn(..)"),
            Kind::FirstOf(sources) => f.debug_tuple("FirstOf").field(sources).finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str) -> Parts {
        http::Request::get(uri).body(()).unwrap().into_parts().0
    }

    fn find(source: &Source, uri: &str) -> Option<String> {
        source
            .find(&parts(uri), None)
            .unwrap()
            .map(|v| v.into_owned())
    }

    #[test]
    fn path_templates() {
        let site = Source::path("/sites/{site}/plans/{plan}", "site");
        let plan = Source::path("/sites/{site}/plans/{plan}", "plan");
        assert_eq!(
            find(&site, "/sites/42/plans/personal").as_deref(),
            Some("42")
        );
        assert_eq!(
            find(&plan, "/sites/42/plans/personal").as_deref(),
            Some("personal")
        );
        assert_eq!(find(&site, "/sites/42/plans/personal/x"), None);
        assert_eq!(find(&site, "/other/42/plans/personal"), None);
        assert_eq!(find(&site, "/sites/42"), None);
        assert_eq!(
            find(&site, "/sites/example.com%2F..%2Fx/plans/p").as_deref(),
            Some("example.com%2F..%2Fx")
        );
    }

    #[test]
    #[should_panic(expected = "no `{site}` segment")]
    fn a_template_without_the_parameter_panics_at_start_up() {
        let _ = Source::path("/sites/{id}/plans", "site");
    }

    #[test]
    fn query_and_fallbacks() {
        let source = Source::query("site").or(Source::query("blog_id"));
        assert_eq!(
            find(&source, "/p?site=example.com").as_deref(),
            Some("example.com")
        );
        assert_eq!(find(&source, "/p?site=&blog_id=42").as_deref(), Some("42"));
        assert_eq!(find(&source, "/p"), None);
        assert!(matches!(
            source.find(&parts("/p?site=a&site=b"), None),
            Err(Rejection::InvalidBody(_))
        ));
        assert!(!source.needs_body());
        assert!(source.or(Source::field("siteurl")).needs_body());
    }

    #[test]
    fn closures() {
        let source =
            Source::from_fn(|parts| parts.uri.path().strip_prefix("/s/").map(str::to_owned));
        assert_eq!(find(&source, "/s/42").as_deref(), Some("42"));
        assert_eq!(format!("{source:?}"), "Fn(..)");
    }
}
