//! Who is calling, when the authentication says: on Lambda behind API Gateway, the
//! authorizer's verdict in the request context (a JWT's `sub` claim, or the IAM caller's ARN).
//! The local bearer token names no one, so locally every caller is the same.

use lambda_http::request::RequestContext;

/// The caller's identity from the request's extensions, if the authentication gives one.
pub(crate) fn caller(extensions: &axum::http::Extensions) -> Option<String> {
    let found = match extensions.get::<RequestContext>()? {
        RequestContext::ApiGatewayV2(ctx) => ctx.authorizer.as_ref().and_then(|a| {
            a.jwt
                .as_ref()
                .and_then(|j| j.claims.get("sub").cloned())
                .or_else(|| a.iam.as_ref().and_then(|i| i.user_arn.clone()))
        }),
        RequestContext::ApiGatewayV1(ctx) => ctx
            .authorizer
            .fields
            .get("claims")
            .and_then(|c| c.get("sub"))
            .and_then(|s| s.as_str())
            .map(str::to_owned)
            .or_else(|| ctx.identity.user_arn.clone()),
        _ => None,
    };
    found.filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(mut json: serde_json::Value) -> axum::http::Extensions {
        json["http"] = serde_json::json!({"method": "GET"});
        let ctx: lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequestContext =
            serde_json::from_value(json).expect("a request context");
        let mut ext = axum::http::Extensions::new();
        ext.insert(RequestContext::ApiGatewayV2(ctx));
        ext
    }

    #[test]
    fn the_caller_is_the_jwt_subject_or_the_iam_arn() {
        assert_eq!(caller(&axum::http::Extensions::new()), None);
        let jwt = context(serde_json::json!({
            "authorizer": {"jwt": {"claims": {"sub": "user-42"}, "scopes": null}}
        }));
        assert_eq!(caller(&jwt).as_deref(), Some("user-42"));
        let iam = context(serde_json::json!({
            "authorizer": {"iam": {"userArn": "arn:aws:iam::123456789012:user/uploader"}}
        }));
        assert_eq!(
            caller(&iam).as_deref(),
            Some("arn:aws:iam::123456789012:user/uploader")
        );
        assert_eq!(caller(&context(serde_json::json!({}))), None);
    }
}
