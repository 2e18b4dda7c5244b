"""Client-Server API route modules (one module per concern).

The account/profile/device/push-rule/etc. routes are assembled by
`services.clientapi.routes.account_routers.build_account_routers`.
"""
