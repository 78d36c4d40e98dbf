"""The push API: POST /api/v1/actuals and its OpenAPI description."""
