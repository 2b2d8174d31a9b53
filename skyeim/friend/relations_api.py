"""HTTP API of friend requests and blocks, in the Friend service (docs/protocol.md
"Friend requests and blocking"; optional endpoints beyond PROTOCOL.md section 6, 9.1).

  POST   /v1/friends/requests              {fromUserId, toUserId} -> {status, createdAt?, new?}
  GET    /v1/friends/requests/<userId>     -> {incoming: [{userId, createdAt}], outgoing: [...]}
  GET    /v1/friends/requests/<from>/<to>  -> {pending}
  POST   /v1/friends/requests/decline      {userId, fromUserId} -> {declined}
  POST   /v1/blocks                        {userId, blockedId} -> {wereFriends}
  DELETE /v1/blocks/<userId>/<blockedId>   -> {unblocked}
  GET    /v1/blocks/<userId>               -> {blocked: [{userId, createdAt}]}
  POST   /v1/blocks/check                  {pairs: [[a, b], ...]} -> {blocked: [bool, ...]}

Accepting is befriending (POST /v1/friends), which clears the requests between the two.
"""
from __future__ import annotations

from flask import Flask

from skyeim.db import Database
from skyeim.friend import relations
from skyeim.web import bad_request, body_user_id, json_body, path_user_id

MAX_PAIRS = 1000            # pairs in one /v1/blocks/check


def _two(body: dict, a: str, b: str) -> tuple[int, int]:
    x, y = body_user_id(body, a), body_user_id(body, b)
    if x == y:
        raise bad_request(f"{a} and {b} must be two different users")
    return x, y


def add_routes(app: Flask, db: Database) -> None:
    @app.post("/v1/friends/requests")
    def make_request():
        return db.run(relations.request, *_two(json_body(), "fromUserId", "toUserId"))

    @app.get("/v1/friends/requests/<user_id>")
    def list_requests(user_id: str):
        return db.run(relations.requests_of, path_user_id(user_id, "userId"))

    @app.get("/v1/friends/requests/<from_id>/<to_id>")
    def is_pending(from_id: str, to_id: str):
        return {"pending": db.run(relations.pending, path_user_id(from_id, "fromUserId"),
                                  path_user_id(to_id, "toUserId"))}

    @app.post("/v1/friends/requests/decline")
    def decline():
        return {"declined": db.run(relations.decline, *_two(json_body(), "userId", "fromUserId"))}

    @app.post("/v1/blocks")
    def block():
        return db.run(relations.block, *_two(json_body(), "userId", "blockedId"))

    @app.delete("/v1/blocks/<user_id>/<blocked_id>")
    def unblock(user_id: str, blocked_id: str):
        return {"unblocked": db.run(relations.unblock, path_user_id(user_id, "userId"),
                                    path_user_id(blocked_id, "blockedId"))}

    @app.get("/v1/blocks/<user_id>")
    def list_blocks(user_id: str):
        return {"blocked": db.run(relations.blocks_of, path_user_id(user_id, "userId"))}

    @app.post("/v1/blocks/check")
    def check():
        raw = json_body().get("pairs")
        if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_PAIRS:
            raise bad_request(f"pairs must be a list of 1 to {MAX_PAIRS} [userId, userId] pairs")
        pairs = []
        for i, p in enumerate(raw):
            if not isinstance(p, list) or len(p) != 2:
                raise bad_request(f"pairs[{i}] must be [userId, userId]")
            pairs.append((body_user_id({"a": p[0]}, "a", f"pairs[{i}]."),
                          body_user_id({"b": p[1]}, "b", f"pairs[{i}].")))
        return {"blocked": db.run(relations.blocked_pairs, pairs)}
