"""``lms-activity token create|list|revoke``: bearer tokens of the integration service."""

from __future__ import annotations

import argparse

from lms_activity_pipeline.settings import Settings
from lms_activity_pipeline.warehouse import tokens
from lms_activity_pipeline.warehouse.store import Warehouse


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    token = sub.add_parser("token", parents=[common], help="create, list or revoke API tokens")
    actions = token.add_subparsers(dest="token_action", required=True)
    create = actions.add_parser("create", parents=[common], help="create a token (printed once)")
    create.add_argument("--name", required=True, help="a name to list and revoke it by")
    create.add_argument("--scope", required=True, choices=tokens.SCOPES, help="read, or write (includes read)")
    actions.add_parser("list", parents=[common], help="the tokens (never their secrets)")
    revoke = actions.add_parser("revoke", parents=[common], help="revoke a token")
    revoke.add_argument("name")


def run(settings: Settings, args: argparse.Namespace) -> int:
    store = Warehouse(settings.warehouse_url, settings.warehouse_schema)
    store.migrate()
    if args.token_action == "create":
        secret = tokens.create_token(store.engine, args.name, args.scope)
        print(f"Token {args.name!r} ({args.scope}) created. It is shown this once; send it as 'Authorization: Bearer':")
        print(secret)
        return 0
    if args.token_action == "list":
        found = tokens.list_tokens(store.engine)
        if not found:
            print("No tokens (lms-activity token create --name N --scope read|write).")
        for t in found:
            state = f"revoked {t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "valid"
            created = f"{t.created_at:%Y-%m-%d %H:%M}" if t.created_at else "-"
            print(f"{t.name}\t{t.scope}\tcreated {created}\t{state}")
        return 0
    if tokens.revoke_token(store.engine, args.name):
        print(f"Token {args.name!r} revoked.")
        return 0
    print(f"No valid token named {args.name!r}.")
    return 1
