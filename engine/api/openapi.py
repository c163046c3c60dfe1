"""The OpenAPI document: schemas of the bodies the handlers parse themselves, and the
problems each route may answer with."""

from __future__ import annotations

from engine.api.credentials import MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS
from engine.api.problems import PROBLEM_MEDIA_TYPE
from engine.api.roles import NAME_RE, ROLES
from engine.api.schemas import ALERT_TYPES, MAX_NOTE_CHARS
from geofence.fence import FENCE_ID_PATTERN, MAX_RADIUS_M
from lending.model import MAX_AMOUNT, VIN_RE

_NULLABLE_STR: dict[str, object] = {"type": ["string", "null"]}
FEATURE_SCHEMA: dict[str, object] = {
    "type": "object",
    "required": ["type", "geometry", "properties"],
    "properties": {
        "type": {"const": "Feature"},
        "id": {"type": "string", "pattern": FENCE_ID_PATTERN},
        "geometry": {
            "type": "object",
            "description": "Polygon, MultiPolygon, or Point with properties.radius_m (circle)",
            "properties": {
                "type": {"enum": ["Polygon", "MultiPolygon", "Point"]},
                "coordinates": {"type": "array"},
            },
        },
        "properties": {
            "type": "object",
            "required": ["kind"],
            "properties": {
                "name": {"type": "string"},
                "kind": {"enum": ["zone", "risk_site"]},
                "category": {"type": "string", "examples": ["pawnshop", "impound", "lender"]},
                "dwell_s": {"type": "integer", "minimum": 0},
                "radius_m": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_RADIUS_M},
                "coord_sys": {
                    "enum": ["wgs84", "gcj02", "bd09"],
                    "default": "wgs84",
                    "description": "the system of the coordinates: gcj02 for AMap and Tencent, "
                    "bd09 for Baidu; converted to WGS84 and stored so",
                },
                "declared_coord_sys": {
                    "enum": ["wgs84", "gcj02", "bd09"],
                    "description": "the system the fence was drawn in (set from coord_sys)",
                },
            },
        },
    },
}
COLLECTION_SCHEMA: dict[str, object] = {
    "type": "object",
    "required": ["type", "features"],
    "properties": {
        "type": {"const": "FeatureCollection"},
        "features": {"type": "array", "items": {**FEATURE_SCHEMA, "required": ["id", "type"]}},
    },
}
_AMOUNT: dict[str, object] = {"type": "number", "minimum": 0, "maximum": MAX_AMOUNT}
_POINT: dict[str, object] = {
    "type": "object",
    "required": ["lat", "lon"],
    "properties": {
        "lat": {"type": "number", "minimum": -90, "maximum": 90},
        "lon": {"type": "number", "minimum": -180, "maximum": 180},
    },
}
LOAN_SCHEMA: dict[str, object] = {
    "type": "object",
    "required": ["vin", "device_ids"],
    "properties": {
        "vin": {"type": "string", "pattern": f"^{VIN_RE.pattern}$"},
        "device_ids": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "zone_ids": {"type": "array", "items": {"type": "string"}},
        "status": {"enum": ["active", "closed"], "default": "active"},
        "principal": _AMOUNT,
        "vehicle": {
            "type": "object",
            "properties": {
                "make": _NULLABLE_STR,
                "model": _NULLABLE_STR,
                "year": {"type": "integer", "minimum": 1900, "maximum": 2100},
                "mileage_km": _AMOUNT,
                "value": _AMOUNT,
                "valued_at": {
                    "type": "string",
                    "description": "ISO-8601 date, or date-time with offset, of the valuation",
                },
            },
        },
        "home": _POINT,
        "work": _POINT,
        "tz": {"type": "string", "description": "IANA time zone (Asia/Shanghai)"},
    },
}
QUOTE_SCHEMA: dict[str, object] = {
    "type": "object",
    "required": ["vehicle", "principal"],
    "properties": {
        "vehicle": LOAN_SCHEMA["properties"]["vehicle"],  # type: ignore[index]  # our dict literal above
        "principal": _AMOUNT,
        "device_id": {"type": "string", "description": "price with this tracker's history"},
    },
}
LOANS_IMPORT_SCHEMA: dict[str, object] = {
    "type": "array",
    "items": {
        **LOAN_SCHEMA,
        "required": ["loan_id", "vin", "device_ids"],
        "properties": {"loan_id": {"type": "string"}, **LOAN_SCHEMA["properties"]},  # type: ignore[dict-item]  # our dict literal above
    },
}
WEBHOOK_SCHEMA: dict[str, object] = {
    "type": "object",
    "required": ["url", "secret"],
    "properties": {
        "url": {
            "type": "string",
            "format": "uri",
            "description": (
                "http:// or https:// (signed POSTs), or mqtt://host[:port]/topic or "
                "mqtts://… (QoS 1 publishes to that topic, signature in MQTT v5 user "
                "properties; no wildcards, no user:password@)"
            ),
        },
        "secret": {"type": "string", "minLength": 1, "description": "HMAC key; never returned"},
        "types": {
            "type": ["array", "null"],
            "items": {"enum": sorted(ALERT_TYPES)},
            "description": "Alert types to send; omit or null for all.",
        },
    },
}
ACK_SCHEMA: dict[str, object] = {
    "type": "object",
    "properties": {"note": {"type": "string", "maxLength": MAX_NOTE_CHARS}},
}
NOTE_SCHEMA: dict[str, object] = {
    "type": "object",
    "required": ["text"],
    "properties": {"text": {"type": "string", "minLength": 1, "maxLength": MAX_NOTE_CHARS}},
}
ASSIGN_SCHEMA: dict[str, object] = {
    "type": "object",
    "required": ["assignee"],
    "properties": {
        "assignee": {
            "type": ["string", "null"],
            "description": "an operator (role operator or admin); null unassigns",
        }
    },
}
_NAME: dict[str, object] = {"type": "string", "pattern": f"^{NAME_RE.pattern}$"}
_PASSWORD: dict[str, object] = {
    "type": "string",
    "minLength": MIN_PASSWORD_CHARS,
    "maxLength": MAX_PASSWORD_CHARS,
}
OPERATOR_SCHEMA: dict[str, object] = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"enum": list(ROLES)},
        "password": {
            **_PASSWORD,
            "description": "required to create an operator; given, it replaces the old one "
            "and ends the operator's sessions; stored as a scrypt hash, never returned",
        },
    },
}
LOGIN_SCHEMA: dict[str, object] = {
    "type": "object",
    "required": ["name", "password"],
    "properties": {"name": {"type": "string"}, "password": {"type": "string"}},
}
TOKEN_SCHEMA: dict[str, object] = {
    "type": "object",
    "required": ["name", "role"],
    "properties": {"name": _NAME, "role": {"enum": list(ROLES)}},
}


def body_doc(schema: dict[str, object], *, required: bool = True) -> dict[str, object]:
    """OpenAPI `requestBody` for a JSON body a handler parses itself."""
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": schema}},
        }
    }


def error_responses(*codes: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI `responses` for the problems a route may answer (401, 403 and 500 always)."""
    descriptions = {
        400: "Malformed request or invalid query parameter",
        401: "Missing or invalid bearer token",
        403: "The caller's role does not admit the request (the problem names the role "
        "needed), a device token where it does not admit, or a session without its CSRF token",
        404: "Not found",
        409: "Conflict with the resource's state",
        413: "Request body too large",
        415: "Unsupported media type",
        422: "Validation error naming the field",
        429: "Too many attempts: retry after Retry-After seconds",
        500: "Internal error",
        503: "Unavailable",
    }
    content = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    return {
        code: {"description": descriptions[code], "content": content}
        for code in sorted({*codes, 401, 403, 500})
    }


BODY_ERRORS = (400, 413, 415, 422)
"""The problems of a route that takes a JSON body."""


PROBLEM_SCHEMA: dict[str, object] = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "instance"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": _NULLABLE_STR, "message": {"type": "string"}},
            },
        },
    },
}
