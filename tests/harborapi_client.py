"""Drive wharf's Harbor API with the real harborapi client (PyPI, pinned in
scripts/requirements-harborapi.txt), as a user of Harbor would.

Run by tests/it/harborapi.rs against a running wharf that has:
  - projects `a` (private, administered by the htpasswd user given with --user),
    `b` (private) and `pub` (public) in its config, and project `seen` only from traffic
    (an image pushed to `seen/app` through wharf before this script runs);
  - a webhook receiver at --receiver (loopback targets allowed).

Every webhook, project, user, systeminfo, ping, health and jobs method harborapi has is
called, by project name and by numeric id where it takes a project: the ones wharf serves
must succeed and their answers validate with harborapi's pydantic models (validate=True, a
ValidationError is a failure); the ones wharf does not serve must fail with a Harbor error
status (404/405, never 5xx) whose body is Harbor's error JSON. The list calls use small pages
so that harborapi follows `Link` across pages.

Prints a table of every method and its result; writes it as JSON to --report. Exit status 0
only when every check held.
"""

import argparse
import asyncio
import json
import sys
import traceback

import pydantic
from harborapi import HarborAsyncClient
from harborapi.exceptions import StatusError
from harborapi.models import (
    ProjectMember,
    ProjectMetadata,
    ProjectReq,
    UserCreationReq,
    UserProfile,
    WebhookPolicy,
    WebhookTargetObject,
)

RESULTS = []
FAILURES = []


class Check(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise Check(what)


async def step(method, how, coro_fn, check=None):
    """Call a method that wharf serves; `check(result)` asserts on the answer."""
    try:
        result = await coro_fn()
        note = check(result) if check else None
        RESULTS.append({"method": method, "how": how, "result": "ok", "note": note or ""})
        return result
    except pydantic.ValidationError as e:
        FAILURES.append(f"{method} ({how}): pydantic validation error: {e}")
        RESULTS.append({"method": method, "how": how, "result": "FAILED: validation", "note": str(e)[:200]})
    except StatusError as e:
        FAILURES.append(f"{method} ({how}): HTTP {e.status_code}: {e}")
        RESULTS.append({"method": method, "how": how, "result": f"FAILED: HTTP {e.status_code}", "note": str(e)[:200]})
    except Exception as e:  # noqa: BLE001 - every failure is reported
        FAILURES.append(f"{method} ({how}): {type(e).__name__}: {e}\n{traceback.format_exc()}")
        RESULTS.append({"method": method, "how": how, "result": f"FAILED: {type(e).__name__}", "note": str(e)[:200]})
    return None


async def refused(method, how, coro_fn, statuses, message_part=None):
    """Call something wharf answers with an error: the status must be one of `statuses`, with
    Harbor's error JSON (harborapi parses `errors[]`)."""
    try:
        await coro_fn()
    except StatusError as e:
        errors = e.errors or []
        msg = errors[0].message if errors else ""
        # a HEAD answer (project_exists) has no body to carry the error JSON
        ok = e.status_code in statuses and (bool(errors) or method == "project_exists")
        if ok and message_part is not None and message_part not in (msg or ""):
            ok = False
        if ok:
            RESULTS.append({"method": method, "how": how, "result": f"HTTP {e.status_code}", "note": msg or ""})
        else:
            FAILURES.append(f"{method} ({how}): HTTP {e.status_code} {errors!r}, wanted {statuses} {message_part!r}")
            RESULTS.append({"method": method, "how": how, "result": f"FAILED: HTTP {e.status_code}", "note": msg or ""})
        return
    except Exception as e:  # noqa: BLE001
        FAILURES.append(f"{method} ({how}): {type(e).__name__}: {e}")
        RESULTS.append({"method": method, "how": how, "result": f"FAILED: {type(e).__name__}", "note": str(e)[:200]})
        return
    FAILURES.append(f"{method} ({how}): succeeded, wanted HTTP {statuses}")
    RESULTS.append({"method": method, "how": how, "result": "FAILED: no error", "note": ""})


def target(address, **kw):
    return WebhookTargetObject(type="http", address=address, skip_cert_verify=True, **kw)


async def webhooks(admin, receiver, ids):
    """Every webhook method, by name and by id, with Link pagination."""
    for project, how in (("a", "by name"), (ids["a"], "by id")):
        label = f"{how}"
        suffix = "n" if how == "by name" else "i"
        created = []
        for i in range(3):
            policy = WebhookPolicy(
                name=f"hook-{suffix}{i}",
                description="from harborapi",
                enabled=True,
                event_types=["PUSH_ARTIFACT", "SCANNING_STOPPED", "REPLICATION", "TAG_RETENTION"],
                targets=[target(f"{receiver}/{suffix}{i}", auth_header=f"Bearer t0ken-{suffix}{i}")],
            )
            loc = await step(
                "create_webhook_policy", label, lambda p=policy: admin.create_webhook_policy(project, p),
                lambda loc: expect(loc.rsplit("/", 1)[-1].isdigit() and loc.startswith("/api/v2.0/projects/"), loc) or loc,
            )
            if loc:
                created.append(int(loc.rsplit("/", 1)[-1]))
        slack = WebhookPolicy(
            name=f"slack-{suffix}", enabled=True, event_types=["PUSH_ARTIFACT"],
            targets=[WebhookTargetObject(type="slack", address=f"{receiver}/slack-{suffix}")],
        )
        await step("create_webhook_policy", f"{label}, slack target", lambda: admin.create_webhook_policy(project, slack))

        def all_listed(policies):
            names = [p.name for p in policies]
            expect(len(policies) == 4, f"4 policies, got {names}")
            ids_ = [p.id for p in policies]
            expect(ids_ == sorted(ids_, reverse=True), f"newest first: {names}")
            for p in policies:
                expect(p.enabled is True, p)
                expect(p.project_id == ids["a"], p)
                if p.name.startswith("hook-"):
                    expect(p.targets[0].auth_header == f"Bearer t0ken-{p.name[5:]}", f"auth_header as stored: {p.targets[0]}")
                    expect(p.targets[0].payload_format.root == "Default", p.targets[0])
                else:
                    expect(p.targets[0].payload_format is None, f"a slack target has no format: {p.targets[0]}")
            return "4 policies over 4 pages of 1 (Link followed), newest first, auth_header as stored"

        await step(
            "get_webhook_policies", f"{label}, query name=~-{suffix}, page_size=1",
            lambda: admin.get_webhook_policies(project, query=f"name=~-{suffix}", page_size=1), all_listed,
        )
        await step(
            "get_webhook_policies", f"{label}, query name=~hook, page_size=2",
            lambda: admin.get_webhook_policies(project, query=f"name=~hook-{suffix}", page_size=2),
            lambda ps: expect([p.name for p in ps] == [f"hook-{suffix}2", f"hook-{suffix}1", f"hook-{suffix}0"], [p.name for p in ps]) or "3 of 4, two pages",
        )
        await step(
            "get_webhook_policies", f"{label}, sort=name",
            lambda: admin.get_webhook_policies(project, sort="name", page_size=10),
            lambda ps: expect([p.name for p in ps] == sorted(p.name for p in ps), [p.name for p in ps]) or "sorted by name",
        )
        await refused("get_webhook_policies", f"{label}, malformed q", lambda: admin.get_webhook_policies(project, query="name={a"), {400}, "invalid query string value")
        await refused("get_webhook_policies", f"{label}, page_size=101", lambda: admin.get_webhook_policies(project, page_size=101), {422}, "page_size")
        if not created:
            continue
        pid = created[0]
        got = await step(
            "get_webhook_policy", label, lambda: admin.get_webhook_policy(project, pid),
            lambda p: expect(p.id == pid and p.project_id == ids["a"] and "SCANNING_STOPPED" in p.event_types, p) or "policy with REPLICATION, TAG_RETENTION, SCANNING_STOPPED",
        )
        if got:
            # read-modify-write, as a UI or terraform does: converges (auth_header kept)
            got.description = "changed by harborapi"
            await step("update_webhook_policy", f"{label}, read-modify-write", lambda: admin.update_webhook_policy(project, pid, got))
            await step(
                "get_webhook_policy", f"{label}, after update", lambda: admin.get_webhook_policy(project, pid),
                lambda p: expect(p.description == "changed by harborapi" and p.targets[0].auth_header == got.targets[0].auth_header and p.enabled, p) or "converged",
            )
            # a partial update, as harborapi's docs show it: Harbor answers 400
            await refused("update_webhook_policy", f"{label}, partial body", lambda: admin.update_webhook_policy(project, pid, WebhookPolicy(enabled=False)), {400})
            # without `enabled`: off, as Harbor
            body = got.model_copy()
            body.enabled = None
            data = json.loads(body.model_dump_json(exclude_none=True))
            await step("update_webhook_policy", f"{label}, without enabled", lambda: admin.put(f"/projects/{project}/webhook/policies/{pid}", json=data, headers={"X-Is-Resource-Name": "true" if isinstance(project, str) else "false"}))
            await step("get_webhook_policy", f"{label}, enabled now false", lambda: admin.get_webhook_policy(project, pid), lambda p: expect(p.enabled is False, p) or "enabled: false")
        await step(
            "get_webhook_supported_events", label, lambda: admin.get_webhook_supported_events(project),
            lambda ev: expect([e.root for e in ev.event_type] == ["PUSH_ARTIFACT", "PULL_ARTIFACT", "DELETE_ARTIFACT", "QUOTA_EXCEED", "QUOTA_WARNING", "SCANNING_FAILED", "SCANNING_STOPPED", "SCANNING_COMPLETED", "REPLICATION", "TAG_RETENTION"], ev) or "Harbor's ten types",
        )
        await step(
            "get_webhook_policy_last_trigger", label, lambda: admin.get_webhook_policy_last_trigger(project),
            lambda rows: expect(len(rows) >= 4, rows) or f"{len(rows)} rows",
        )
        await refused("get_webhook_policy", f"{label}, unknown id", lambda: admin.get_webhook_policy(project, 999999), {404})
        await step("delete_webhook_policy", label, lambda: admin.delete_webhook_policy(project, created[-1]))
        await refused("delete_webhook_policy", f"{label}, again", lambda: admin.delete_webhook_policy(project, created[-1]), {404})
    # policies by id of an unknown project
    await refused("get_webhook_policies", "unknown project id", lambda: admin.get_webhook_policies(999999), {404})


async def jobs(admin, ids, pushed_policy):
    for project, how in (("seen", "by name"), (ids["seen"], "by id")):
        await step(
            "get_webhook_jobs", f"{how}, page_size=1", lambda: admin.get_webhook_jobs(project, pushed_policy, page_size=1),
            lambda js: expect(len(js) == 2 and all(j.policy_id == pushed_policy and j.event_type == "PUSH_ARTIFACT" and j.notify_type == "http" and j.job_detail for j in js), js) or "2 jobs over 2 pages (Link followed), payload in job_detail",
        )
        await step(
            "get_webhook_jobs", f"{how}, status=Success", lambda: admin.get_webhook_jobs(project, pushed_policy, status=["Success"]),
            lambda js: expect(len(js) == 2 and all(j.status == "Success" for j in js), js) or "filtered by status",
        )
        await refused("get_webhook_jobs", f"{how}, unknown policy", lambda: admin.get_webhook_jobs(project, 999999), {404})
        await refused("get_webhook_jobs", f"{how}, malformed q", lambda: admin.get_webhook_jobs(project, pushed_policy, query="status"), {400}, 'must contain "="')


async def projects(admin, user, anonymous, ids):
    await step("project_exists", "config project", lambda: admin.project_exists("a"), lambda r: expect(r is True, r) or "True")
    await step("project_exists", "seen in traffic", lambda: admin.project_exists("seen"), lambda r: expect(r is True, r) or "True")
    await step("project_exists", "unknown", lambda: admin.project_exists("nope"), lambda r: expect(r is False, r) or "False")
    await refused("project_exists", "anonymous", lambda: anonymous.project_exists("a"), {401})

    def listed(names):
        def check(ps):
            got = [p.name for p in ps]
            expect(got == names, f"{got} != {names}")
            for p in ps:
                expect(p.project_id == ids[p.name], p)
                expect(p.metadata is not None and p.metadata.public in ("true", "false"), p.metadata)
                expect(p.repo_count is not None and p.creation_time is not None, p)
            return f"{len(ps)} projects, by name"
        return check

    every = sorted(ids)
    await step("get_projects", "admin, page_size=2", lambda: admin.get_projects(page_size=2), listed(every))
    await step("get_projects", "admin, query name=~e", lambda: admin.get_projects(query="name=~e", page_size=1), listed([n for n in every if "e" in n]))
    await step("get_projects", "admin, name=pu", lambda: admin.get_projects(name="pu"), listed(["pub"]))
    await step("get_projects", "admin, public=True", lambda: admin.get_projects(public=True), listed(["pub"]))
    await step("get_projects", "admin, sort=-project_id", lambda: admin.get_projects(sort="-project_id", page_size=100),
               lambda ps: expect([p.project_id for p in ps] == sorted((p.project_id for p in ps), reverse=True), ps) or "ids descending")
    await step("get_projects", "project admin", lambda: user.get_projects(), listed(["a", "pub"]))
    await step("get_projects", "anonymous", lambda: anonymous.get_projects(), listed(["pub"]))
    await refused("get_projects", "malformed q", lambda: admin.get_projects(query="name"), {400}, 'must contain "="')
    await refused("get_projects", "range with two ~", lambda: admin.get_projects(query="project_id=[1~2~3]"), {400}, "invalid query string value")
    await refused("get_projects", "page_size=1000", lambda: admin.get_projects(page_size=1000), {422})
    await step("get_projects", "page=0", lambda: admin.get_projects(page=0, page_size=100), listed(every))
    await step("get_projects", "page far past the end", lambda: admin.get_projects(page=2**62, page_size=100), lambda ps: expect(ps == [], ps) or "[]")
    await refused("get_projects", "page not a number", lambda: admin.get("/projects", params={"page": "x"}), {422})

    for name in every:
        await step("get_project", f"{name} by name", lambda n=name: admin.get_project(n),
                   lambda p, n=name: expect(p.name == n and p.project_id == ids[n], p) or f"id {ids[n]}")
        await step("get_project", f"{name} by id", lambda n=name: admin.get_project(ids[n]),
                   lambda p, n=name: expect(p.name == n, p) or f"name {n}")
    await step("get_project", "seen: repo_count", lambda: admin.get_project("seen"), lambda p: expect(p.repo_count == 1, p) or "repo_count 1")
    await step("get_project", "project admin, own", lambda: user.get_project("a"), lambda p: expect(p.current_user_role_id == 1, p) or "role 1 (projectAdmin)")
    await step("get_project", "anonymous, public", lambda: anonymous.get_project("pub"))
    await refused("get_project", "unknown id, admin", lambda: admin.get_project(999999), {404})
    await refused("get_project", "unknown name, admin", lambda: admin.get_project("nope"), {404}, "not found")
    await refused("get_project", "other private project, user", lambda: user.get_project("b"), {403})
    await refused("get_project", "private project, anonymous", lambda: anonymous.get_project("a"), {401})

    # what wharf does not serve (projects are read-only; no members, scanners, metadata, logs)
    for method, fn in [
        ("create_project", lambda: admin.create_project(ProjectReq(project_name="new"))),
        ("update_project", lambda: admin.update_project("a", ProjectReq(project_name="a"))),
        ("delete_project", lambda: admin.delete_project("a")),
        ("get_project_scanner", lambda: admin.get_project_scanner("a")),
        ("set_project_scanner", lambda: admin.set_project_scanner("a", "uuid")),
        ("get_project_scanner_candidates", lambda: admin.get_project_scanner_candidates("a")),
        ("get_project_logs", lambda: admin.get_project_logs("a")),
        ("get_project_summary", lambda: admin.get_project_summary("a")),
        ("get_project_artifacts", lambda: admin.get_project_artifacts("a")),
        ("get_project_deletable", lambda: admin.get_project_deletable("a")),
        ("get_project_members", lambda: admin.get_project_members("a")),
        ("get_project_member", lambda: admin.get_project_member("a", 1)),
        ("add_project_member", lambda: admin.add_project_member("a", ProjectMember(role_id=1))),
        ("add_project_member_user", lambda: admin.add_project_member_user("a", 2, 1)),
        ("add_project_member_group", lambda: admin.add_project_member_group("a", 2, 1)),
        ("update_project_member_role", lambda: admin.update_project_member_role("a", 1, 2)),
        ("remove_project_member", lambda: admin.remove_project_member("a", 1)),
        ("get_project_metadata", lambda: admin.get_project_metadata("a")),
        ("set_project_metadata", lambda: admin.set_project_metadata("a", ProjectMetadata(public="true"))),
        ("get_project_metadata_entry", lambda: admin.get_project_metadata_entry("a", "public")),
        ("update_project_metadata_entry", lambda: admin.update_project_metadata_entry("a", "public", {"public": "true"})),
        ("delete_project_metadata_entry", lambda: admin.delete_project_metadata_entry("a", "public")),
    ]:
        await refused(method, "not served", fn, {404, 405})


async def users(admin, user, user_name):
    await step("get_current_user", "admin", lambda: admin.get_current_user(),
               lambda u: expect(u.user_id == 1 and u.username == "admin" and u.sysadmin_flag is True, u) or "user_id 1, sysadmin")
    me = await step("get_current_user", "htpasswd user", lambda: user.get_current_user(),
                    lambda u: expect(u.username == user_name and u.sysadmin_flag is False and u.user_id > 1, u) or f"{user_name}, not sysadmin")
    await step("get_users", "admin, page_size=1", lambda: admin.get_users(page_size=1),
               lambda us: expect(sorted(u.username for u in us) == sorted(["admin", user_name, "bob"]), us) or "3 users over 3 pages")
    await step("get_users", "admin, query username=~bo", lambda: admin.get_users(query="username=~bo"),
               lambda us: expect([u.username for u in us] == ["bob"], us) or "bob")
    await refused("get_users", "htpasswd user", lambda: user.get_users(), {403})
    if me:
        await step("get_user", "admin, by id", lambda: admin.get_user(me.user_id), lambda u: expect(u.username == user_name, u) or user_name)
        await step("get_user", "the user themself", lambda: user.get_user(me.user_id))
    await refused("get_user", "another user", lambda: user.get_user(1), {403})
    await refused("get_user", "unknown id", lambda: admin.get_user(999999), {404})
    await step("search_users_by_username", "any user", lambda: user.search_users_by_username("adm"),
               lambda us: expect([u.username for u in us] == ["admin"], us) or "admin")
    await step("get_user_by_username", "admin", lambda: admin.get_user_by_username(user_name),
               lambda u: expect(u.username == user_name, u) or user_name)
    for method, fn in [
        ("get_current_user_permissions", lambda: admin.get_current_user_permissions()),
        ("create_user", lambda: admin.create_user(UserCreationReq(username="new", password="Passw0rd!"))),
        ("update_user", lambda: admin.update_user(2, UserProfile(email="x@example.com"))),
        ("delete_user", lambda: admin.delete_user(2)),
        ("set_user_admin", lambda: admin.set_user_admin(2, True)),
        ("set_user_password", lambda: admin.set_user_password(2, "Passw0rd!")),
        ("set_user_cli_secret", lambda: admin.set_user_cli_secret(2, "Secret123")),
    ]:
        await refused(method, "not served", fn, {404, 405})


async def system(admin, anonymous, version):
    await step("get_system_info", "admin", lambda: admin.get_system_info(),
               lambda i: expect(i.auth_mode == "db_auth" and i.harbor_version == version and i.notification_enable is True, i) or f"harbor_version {version}")
    await step("get_system_info", "anonymous", lambda: anonymous.get_system_info(),
               lambda i: expect(i.auth_mode == "db_auth" and i.harbor_version is None, i) or "auth facts only")
    await refused("get_system_volume_info", "not served", lambda: admin.get_system_volume_info(), {404})
    # harborapi hands back whatever body the server sent here, without looking at the status
    await step("get_system_certificate", "not served: the body is the 404 error", lambda: admin.get_system_certificate(),
               lambda f: expect(json.loads(bytes(f))["errors"][0]["code"] == "NOT_FOUND", bytes(f)) or "Harbor error JSON (NOT_FOUND)")
    await step("ping", "anonymous", lambda: anonymous.ping(), lambda t: expect(t == "Pong", t) or "Pong")
    await step("health_check", "anonymous", lambda: anonymous.health_check(),
               lambda h: expect(h.status == "healthy" and sorted(c.name for c in h.components) == ["registry", "store"], h) or "healthy: registry, store")


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True, help="http://127.0.0.1:PORT/api/v2.0")
    ap.add_argument("--admin-password", required=True)
    ap.add_argument("--user", required=True, help="NAME:PASSWORD of the admin of project a")
    ap.add_argument("--receiver", required=True)
    ap.add_argument("--pushed-policy", type=int, required=True, help="policy of project seen that got two pushes")
    ap.add_argument("--version", required=True, help="wharf's harbor_version")
    ap.add_argument("--report", required=True)
    args = ap.parse_args()
    user_name, user_pw = args.user.split(":", 1)
    admin = HarborAsyncClient(url=args.url, username="admin", secret=args.admin_password, validate=True)
    user = HarborAsyncClient(url=args.url, username=user_name, secret=user_pw, validate=True)
    # Harbor reads wrong credentials as anonymous
    anonymous = HarborAsyncClient(url=args.url, username="nobody", secret="wrong", validate=True)

    ids = {}
    for name in ["a", "b", "pub", "seen"]:
        p = await admin.get_project(name)
        ids[name] = p.project_id
    await system(admin, anonymous, args.version)
    await users(admin, user, user_name)
    await projects(admin, user, anonymous, ids)
    await jobs(admin, ids, args.pushed_policy)
    await webhooks(admin, args.receiver, ids)

    width = max(len(r["method"]) for r in RESULTS)
    print(f"{'method':<{width}} | how | result | note")
    for r in RESULTS:
        print(f"{r['method']:<{width}} | {r['how']} | {r['result']} | {r['note']}")
    with open(args.report, "w") as f:
        json.dump({"results": RESULTS, "failures": FAILURES}, f, indent=2)
    if FAILURES:
        print("\nFAILURES:\n" + "\n".join(FAILURES), file=sys.stderr)
        sys.exit(1)


asyncio.run(main())
