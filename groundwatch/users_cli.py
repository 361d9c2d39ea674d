"""`groundwatch users`: accounts of the cloud's web app and API (add, list, token, disable)."""

from __future__ import annotations

import argparse
import getpass
import os
import secrets
import sys
from pathlib import Path

EXIT_OK, EXIT_FAIL = 0, 1
# cloud.auth.ROLES (a test checks they agree): the parser of every command, the
# gateway's among them, is built without importing the cloud.
ROLES = ("regulator", "enterprise", "engineer")
ACTIONS = ("add", "list", "token", "disable", "password")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `groundwatch users`."""
    p.add_argument("action", choices=ACTIONS,
                   help="add a user, list users and tokens, make (or --revoke) an API "
                        "token, disable (or --enable) a user, set a password")
    p.add_argument("--db", default="cloud.sqlite",
                   help="the cloud's SQLite file (a PostgreSQL receiver's --auth-db)")
    p.add_argument("--username", help="the account")
    p.add_argument("--role", choices=ROLES, help="add: regulator (every site), "
                   "enterprise (its --site only) or engineer (--site, '*' for all)")
    p.add_argument("--site", action="append", default=[],
                   help="add: a site the user sees (repeat for several)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--password-env", metavar="VAR",
                   help="add/password: environment variable holding the password")
    g.add_argument("--password-file", metavar="PATH",
                   help="add/password: file holding the password")
    g.add_argument("--generate-password", action="store_true",
                   help="add/password: make a random password and print it once")
    p.add_argument("--name", default="api", help="token: what the token is for")
    p.add_argument("--revoke", type=int, metavar="ID", help="token: revoke token ID")
    p.add_argument("--enable", action="store_true", help="disable: enable again")


def _password(args: argparse.Namespace) -> tuple[str, bool]:
    """The password to set and whether it was generated (so is to be printed)."""
    from cloud.auth import AuthError

    if args.generate_password:
        return secrets.token_urlsafe(12), True
    if args.password_env:
        value = os.environ.get(args.password_env)
        if not value:
            raise AuthError(f"--password-env: {args.password_env} is not set")
        return value, False
    if args.password_file:
        return Path(args.password_file).read_text(encoding="utf-8").strip(), False
    if not sys.stdin.isatty():
        raise AuthError("give --password-env, --password-file or --generate-password")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise AuthError("the passwords differ")
    return first, False


def _need_username(args: argparse.Namespace) -> str:
    from cloud.auth import AuthError

    if not args.username:
        raise AuthError(f"users {args.action} needs --username")
    return str(args.username)


def run_users(args: argparse.Namespace) -> int:
    """Carry out one `groundwatch users` action; the audit log names the OS user."""
    from cloud.auth import AuthError, AuthStore

    actor = f"cli:{getpass.getuser()}"
    auth = AuthStore(args.db)
    try:
        if args.action == "list":
            for u in auth.users():
                sites = ",".join(u["sites"]) or "(all)"
                flag = "  DISABLED" if u["disabled"] else ""
                print(f"{u['username']:20} {u['role']:10} {sites:30} "
                      f"tokens={u['tokens']}{flag}")
            for tk in auth.tokens():
                state = f"revoked {tk['revoked_at']}" if tk["revoked_at"] else "live"
                print(f"token {tk['id']:4} {tk['username']:20} {tk['name']:16} "
                      f"created {tk['created_at']} last used {tk['last_used'] or '-'} "
                      f"{state}")
            return EXIT_OK
        if args.action == "token" and args.revoke is not None:
            auth.revoke_token(args.revoke, actor)
            print(f"token {args.revoke} revoked")
            return EXIT_OK
        username = _need_username(args)
        if args.action == "add":
            if not args.role:
                raise AuthError("users add needs --role")
            password, generated = _password(args)
            auth.add_user(username, password, args.role, args.site, actor)
            print(f"added {username} ({args.role}"
                  f"{', sites ' + ','.join(args.site) if args.site else ''})")
            if generated:
                print(f"password: {password}")
        elif args.action == "password":
            password, generated = _password(args)
            auth.set_password(username, password, actor)
            print(f"password of {username} set; their sessions ended")
            if generated:
                print(f"password: {password}")
        elif args.action == "token":
            token = auth.create_token(username, args.name, actor)
            print(f"token for {username} ({args.name}); shown once, send it as "
                  f"'Authorization: Bearer TOKEN':")
            print(token)
        elif args.action == "disable":
            auth.set_disabled(username, not args.enable, actor)
            print(f"{username} {'enabled' if args.enable else 'disabled'}")
        return EXIT_OK
    except AuthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        auth.close()
