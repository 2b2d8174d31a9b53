"""The Message service's checks (PROTOCOL.md section 6, "Message service")."""
from __future__ import annotations

from typing import Any

from skyeim.protocol import MAX_USER_ID
from skyeim.contract.runner import (NOT_USER_IDS, NotRun, Suite, bad_request, chat_message,
                                    json_list, lenient, ms_timestamp, nested, ok, require, same,
                                    short, user_id, without)

SEND = "POST /v1/messages"
UNREAD = "GET /v1/messages/unread"
DELIVERED = "POST /v1/messages/delivered"
READ = "POST /v1/messages/read"
HISTORY = "GET /v1/messages/history"
BULK = 205                  # messages in one conversation: over the cap of 200 a page
NOT_LIMITS = ("0", "-1", "abc", "1.5")


class MessageChecks(Suite):
    service = "message"
    endpoints = (SEND, UNREAD, DELIVERED, READ, HISTORY)

    def checks(self) -> None:
        self.bulk: tuple[int, int] | None = None      # (sender, recipient) of BULK messages
        self.check_send()
        self.check_unread()
        self.check_delivered()
        self.check_read()
        self.check_history()

    # -- calls: each checks its answer's shape (once per endpoint, see Suite.shaped) and
    # returns it read leniently, for the rules ---------------------------------------
    def send(self, sender: int, recipient: int, content: str = "hello", msg_id: str | None = None,
             **extra: Any) -> dict:
        body = {"msgId": msg_id or self.data.msg_id(), "fromUserId": sender,
                "toUserId": recipient, "content": content, **extra}
        answer = self.send_body(body)
        expect = {k: v for k, v in body.items() if k != "contentType" or v is not None}
        expect.setdefault("contentType", 1)
        same(answer, expect, "the answer")
        return answer

    def send_body(self, body: dict) -> dict:
        answer = ok(self.svc.post("/v1/messages", body))
        self.shaped(SEND, sent_shape, answer)
        return lenient(answer)

    def unread(self, uid: int, **params: Any) -> dict:
        answer = ok(self.svc.get("/v1/messages/unread", params={"userId": uid, **params}))
        messages = json_list(answer.get("messages"), "messages")
        for i, m in enumerate(messages):
            self.shaped(UNREAD, chat_message, m, f"messages[{i}]")
        require(isinstance(answer.get("hasMore"), bool), f"hasMore must be a boolean: {short(answer)}")
        require("nextCursor" in answer, f"the answer lacks nextCursor: {short(answer)}")
        if answer["hasMore"]:
            require(isinstance(answer["nextCursor"], (str, int)) and answer["nextCursor"] != "",
                    f"nextCursor must be a cursor while hasMore is true: {short(answer)}")
        else:
            require(answer["nextCursor"] is None,
                    f"nextCursor must be null on the last page: {short(answer)}")
        answer = lenient(answer)
        for i, m in enumerate(answer["messages"]):
            same(m, {"toUserId": uid}, f"messages[{i}]")
        return answer

    def unread_ids(self, uid: int) -> list[str]:
        return [m["msgId"] for m in self.unread(uid, limit=200)["messages"]]

    def history(self, uid: int, peer: int, **params: Any) -> dict:
        answer = ok(self.svc.get("/v1/messages/history",
                                 params={"userId": uid, "peerId": peer, **params}))
        json_list(answer.get("messages"), "messages")
        for i, m in enumerate(answer["messages"]):
            self.shaped(HISTORY, chat_message, m, f"messages[{i}]")
        require(isinstance(answer.get("hasMore"), bool), f"hasMore must be a boolean: {short(answer)}")
        answer = lenient(answer)
        for i, m in enumerate(answer["messages"]):
            require(isinstance(m, dict) and {m.get("fromUserId"), m.get("toUserId")} == {uid, peer},
                    f"messages[{i}] is not between {uid} and {peer}: {short(m)}")
            require(m.get("status") in ("sent", "delivered", "read"),
                    f"messages[{i}].status must be sent, delivered or read, got {short(m.get('status'))}")
        return answer

    def statuses(self, uid: int, peer: int) -> dict[str, str]:
        return {m["msgId"]: m["status"] for m in self.history(uid, peer, limit=200)["messages"]}

    def delivered(self, uid: int, keys: list[tuple[int, str]]) -> list[dict]:
        answer = ok(self.svc.post("/v1/messages/delivered", {
            "userId": uid, "messages": [{"fromUserId": f, "msgId": m} for f, m in keys]}))
        marked = json_list(answer.get("messages"), "messages")
        require(all(isinstance(m, dict) for m in marked), f"messages must be objects: {short(marked)}")
        for i, m in enumerate(marked):
            self.shaped(DELIVERED, marked_shape, m, f"messages[{i}]")
        return lenient(marked)

    def read(self, uid: int, peer: int, msg_ids: Any = ..., **extra: Any) -> dict:
        body = {"userId": uid, "peerId": peer, **extra}
        if msg_ids is not ...:
            body["msgIds"] = msg_ids
        answer = ok(self.svc.post("/v1/messages/read", body))
        ids = json_list(answer.get("msgIds"), "msgIds")
        require(all(isinstance(m, str) for m in ids), f"msgIds must be strings: {short(ids)}")
        self.shaped(READ, ms_timestamp, answer.get("readAt"), "readAt")
        return answer

    def bulk_conversation(self) -> tuple[int, int]:
        """BULK messages from one user to another (for the limit rules), made once."""
        if self.bulk is None:
            sender, recipient = self.data.user_ids(2)
            for i in range(BULK):
                self.send(sender, recipient, f"bulk #{i}")
            self.bulk = (sender, recipient)
        return self.bulk

    # -- POST /v1/messages ----------------------------------------------------------------
    def check_send(self) -> None:
        a, b, c = self.data.user_ids(3)
        first = None
        with self.check(SEND, "stores a chat and answers the ChatMessage plus duplicate, "
                              "delivered and deliveredAt"):
            first = self.send(a, b, "hello ✓ 😀", contentType=1)
            require(first["seq"] == 1, f"a conversation's first message has seq 1, got {first['seq']}")
            require(first.get("duplicate") is False,
                    f"duplicate must be false, got {short(first.get('duplicate'))}")
            require(first.get("delivered") is False,
                    f"delivered must be false, got {short(first.get('delivered'))}")
            require("deliveredAt" in first and first["deliveredAt"] is None,
                    f"deliveredAt must be null until delivered: {short(first)}")
        with self.check(SEND, "contentType is 1 when absent or null; 2, 3 and 4 are stored"):
            for ctype in (None, 2, 3, 4):
                extra = {} if ctype is None else {"contentType": ctype}
                m = self.send(a, c, "https://example.com/file", **extra)
                require(m["contentType"] == (ctype or 1), f"contentType {ctype}: {short(m)}")
            m = self.send(a, c, "null", contentType=None)
            require(m["contentType"] == 1, f"contentType null: {short(m)}")
        with self.check(SEND, "seq is 1, 2, 3, ... per conversation (both directions), no gaps"):
            seqs = [self.send(b, a, "back")["seq"], self.send(a, b, "forth")["seq"]]
            require(seqs == [2, 3], f"a conversation's next seqs were {seqs}, expected [2, 3]")
            other = self.send(b, c, "elsewhere")["seq"]
            require(other == 1, f"another conversation starts at seq 1, got {other}")
        with self.check(SEND, "idempotent on (fromUserId, msgId): a resend answers the original, "
                              "duplicate true, and stores nothing"):
            if first is None:
                raise NotRun("the first send failed")
            again = self.send_body({"msgId": first["msgId"], "fromUserId": a, "toUserId": b,
                                    "content": "changed"})
            require(again.get("duplicate") is True,
                    f"duplicate must be true, got {short(again.get('duplicate'))}")
            for key in ("content", "createdAt", "seq"):
                require(again[key] == first[key],
                        f"a duplicate answers the original {key} {short(first[key])}, "
                        f"got {short(again[key])}")
            ids = [m["msgId"] for m in self.history(a, b, limit=200)["messages"]]
            require(ids.count(first["msgId"]) == 1, f"the resend was stored again: history has "
                                                     f"{ids.count(first['msgId'])} copies")
        with self.check(SEND, "the same msgId from another sender is another message"):
            if first is None:
                raise NotRun("the first send failed")
            other = self.send(c, b, "mine", msg_id=first["msgId"])
            require(other.get("duplicate") is False,
                    f"duplicate must be false, got {short(other.get('duplicate'))}")
        with self.check(SEND, "the largest user id, 2^63-1, works"):
            (peer,) = self.data.user_ids(1)
            m = self.send(peer, MAX_USER_ID, "to the largest id")
            require(m["toUserId"] == MAX_USER_ID, f"toUserId came back as {short(m['toUserId'])}")
        p, q = self.data.user_ids(2)
        good = {"msgId": self.data.msg_id(), "fromUserId": p, "toUserId": q, "content": "x"}
        with self.check(SEND, "an id that is not a JSON integer from 1 to 2^63-1 (or is missing) is 400"):
            for key in ("fromUserId", "toUserId"):
                for case, value in NOT_USER_IDS + [("nested JSON", nested(50))]:
                    bad_request(self.svc.post("/v1/messages", {**good, key: value}), f"{key} {case}")
                bad_request(self.svc.post("/v1/messages", without(good, key)), f"{key} missing")
        with self.check(SEND, "a chat to oneself is 400"):
            bad_request(self.svc.post("/v1/messages", {**good, "toUserId": p}), "toUserId == fromUserId")
        with self.check(SEND, "a missing, empty or non-string content is 400"):
            for case, value in (("empty", ""), ("a number", 5), ("a list", ["x"]), ("null", None)):
                bad_request(self.svc.post("/v1/messages", {**good, "content": value}), f"content {case}")
            bad_request(self.svc.post("/v1/messages", without(good, "content")), "content missing")
        with self.check(SEND, "a contentType other than 1, 2, 3, 4 is 400"):
            for value in (0, 5, "1", 1.5, True):
                bad_request(self.svc.post("/v1/messages", {**good, "contentType": value}),
                            f"contentType {short(value)}")
        with self.check(SEND, "a msgId that is not 1 to 64 of [A-Za-z0-9_-] is 400"):
            for value in ("", "a" * 65, "has space", "ü", 12):
                bad_request(self.svc.post("/v1/messages", {**good, "msgId": value}),
                            f"msgId {short(value, 20)}")
        self.not_json_refused(SEND, "/v1/messages")
        with self.check(SEND, "a refused call stores nothing"):
            got = self.history(p, q)["messages"]
            require(not got, f"refused calls stored {len(got)} message(s)")
        self.secret_required(SEND, "POST", "/v1/messages", json_body=good)

    # -- GET /v1/messages/unread ------------------------------------------------------------
    def check_unread(self) -> None:
        r, s1, s2 = self.data.user_ids(3)
        sent: list[str] = []
        with self.check(UNREAD, "lists the unread messages oldest first, in storage order "
                                "across conversations"):
            for sender in (s1, s2, s1, s1, s2):
                sent.append(self.send(sender, r, f"unread from {sender}")["msgId"])
            got = self.unread_ids(r)
            require(got == sent, f"unread msgIds were {got}, expected {sent}")
        with self.check(UNREAD, "pages with limit: a cursor from nextCursor, hasMore, the last "
                                "page's nextCursor null"):
            if len(sent) != 5:
                raise NotRun("sending the unread messages failed")
            pages, cursor = [], None
            for _ in range(5):                     # 3 pages expected; bounded
                params = {"limit": 2} if cursor is None else {"limit": 2, "cursor": cursor}
                page = self.unread(r, **params)
                pages.append(page)
                if not page["hasMore"]:
                    break
                cursor = page["nextCursor"]
            shape = [(len(p["messages"]), p["hasMore"]) for p in pages]
            require(shape == [(2, True), (2, True), (1, False)],
                    f"pages of limit 2 over 5 messages were (count, hasMore) {shape}, "
                    "expected [(2, True), (2, True), (1, False)]")
            paged = [m["msgId"] for p in pages for m in p["messages"]]
            require(paged == sent, f"the pages together were {paged}, expected {sent}")
        with self.check(UNREAD, "a user with nothing unread gets an empty last page"):
            (nobody,) = self.data.user_ids(1)
            page = self.unread(nobody)
            require(page["messages"] == [] and page["hasMore"] is False,
                    f"answered {short(page)}")
        with self.check(UNREAD, "limit defaults to 50 and is capped at 200"):
            _, recipient = self.bulk_conversation()
            counts = [len(self.unread(recipient, **p)["messages"])
                      for p in ({}, {"limit": 200}, {"limit": 1000})]
            require(counts == [50, 200, 200], f"pages of no limit, limit 200 and limit 1000 held "
                                              f"{counts} messages, expected [50, 200, 200] (of {BULK})")
        with self.check(UNREAD, "a limit that is not a positive integer is 400"):
            for value in NOT_LIMITS:
                bad_request(self.svc.get("/v1/messages/unread", params={"userId": r, "limit": value}),
                            f"limit={value}")
        with self.check(UNREAD, "a missing or invalid userId is 400"):
            bad_request(self.svc.get("/v1/messages/unread"), "no userId")
            for value in ("abc", "0", "-5", "1.5", str(MAX_USER_ID + 1)):
                bad_request(self.svc.get("/v1/messages/unread", params={"userId": value}),
                            f"userId={value}")
        self.secret_required(UNREAD, "GET", "/v1/messages/unread", params={"userId": r})

    # -- POST /v1/messages/delivered ------------------------------------------------------------
    def check_delivered(self) -> None:
        r, s, other = self.data.user_ids(3)
        msgs: list[dict] = []
        marked: list[dict] = []
        with self.check(DELIVERED, "marks the given messages and answers them with deliveredAt"):
            msgs = [self.send(s, r, f"to deliver #{i}") for i in range(3)]
            marked = self.delivered(r, [(s, m["msgId"]) for m in msgs[:2]])
            got = sorted((m["fromUserId"], m["msgId"]) for m in marked)
            want = sorted((s, m["msgId"]) for m in msgs[:2])
            require(got == want, f"marked {got}, expected {want}")
        with self.check(DELIVERED, "answers only the messages newly marked"):
            if len(msgs) != 3:
                raise NotRun("sending failed")
            again = self.delivered(r, [(s, m["msgId"]) for m in msgs])
            got = [m["msgId"] for m in again]
            require(got == [msgs[2]["msgId"]], f"marking all three again answered {got}, "
                                               f"expected only the third ({msgs[2]['msgId']})")
        with self.check(DELIVERED, "marks only messages addressed to userId; unknown ones are left out"):
            elsewhere = self.send(s, other, "not for r")
            got = self.delivered(r, [(s, elsewhere["msgId"]), (s, self.data.msg_id())])
            require(got == [], f"answered {short(got)}, expected [] (not r's messages)")
            status = self.statuses(s, other).get(elsewhere["msgId"])
            require(status == "sent", f"the other user's message became {status!r}")
        with self.check(DELIVERED, "a delivered message shows it: the resend's delivered and "
                                   "deliveredAt, history status delivered"):
            if not marked:
                raise NotRun("marking failed")
            first = msgs[0]
            at = next(m["deliveredAt"] for m in marked if m["msgId"] == first["msgId"])
            again = self.send_body({"msgId": first["msgId"], "fromUserId": s, "toUserId": r,
                                    "content": "again"})
            require(again.get("delivered") is True and again.get("deliveredAt") == at,
                    f"a resend answered delivered={short(again.get('delivered'))}, deliveredAt="
                    f"{short(again.get('deliveredAt'))}; expected true and {at}")
            status = self.statuses(r, s).get(first["msgId"])
            require(status == "delivered", f"history status is {status!r}, expected 'delivered'")
        with self.check(DELIVERED, "delivered messages stay unread until read"):
            if len(msgs) != 3:
                raise NotRun("sending failed")
            got = self.unread_ids(r)
            require(got == [m["msgId"] for m in msgs], f"unread after delivery: {got}")
        with self.check(DELIVERED, "a missing or invalid userId or messages item is 400"):
            good = {"userId": r, "messages": [{"fromUserId": s, "msgId": "m1"}]}
            cases = [("userId missing", without(good, "userId")),
                     ("userId a string", {**good, "userId": str(r)}),
                     ("messages missing", without(good, "messages")),
                     ("messages not a list", {**good, "messages": {"fromUserId": s}}),
                     ("an item not an object", {**good, "messages": ["m1"]}),
                     ("an item without msgId", {**good, "messages": [{"fromUserId": s}]}),
                     ("an item with an invalid msgId",
                      {**good, "messages": [{"fromUserId": s, "msgId": "a b"}]}),
                     ("an item's fromUserId a string",
                      {**good, "messages": [{"fromUserId": str(s), "msgId": "m1"}]})]
            for case, body in cases:
                bad_request(self.svc.post("/v1/messages/delivered", body), case)
        self.not_json_refused(DELIVERED, "/v1/messages/delivered")
        self.secret_required(DELIVERED, "POST", "/v1/messages/delivered",
                             json_body={"userId": r, "messages": []})

    # -- POST /v1/messages/read ----------------------------------------------------------------
    def check_read(self) -> None:
        r, pa, pb = self.data.user_ids(3)
        a_ids: list[str] = []
        b_id = ""
        with self.check(READ, "marks the given messages from peerId and answers the msgIds newly "
                              "marked, with readAt"):
            a_ids = [self.send(pa, r, f"from a #{i}")["msgId"] for i in range(3)]
            b_id = self.send(pb, r, "from b")["msgId"]
            got = self.read(r, pa, [a_ids[0]])["msgIds"]
            require(got == [a_ids[0]], f"answered {got}, expected [{a_ids[0]}]")
        with self.check(READ, "marks only messages from peerId to userId"):
            if len(a_ids) != 3:
                raise NotRun("sending failed")
            got = self.read(r, pb, [a_ids[1]])["msgIds"]
            require(got == [], f"reading with the wrong peerId marked {got}")
            got = self.read(pa, r, [a_ids[1]])["msgIds"]
            require(got == [], f"the sender 'reading' its own message marked {got}")
            status = self.statuses(r, pa).get(a_ids[1])
            require(status == "sent", f"the message became {status!r}")
        with self.check(READ, "answers only the messages newly marked"):
            if not a_ids:
                raise NotRun("sending failed")
            got = self.read(r, pa, [a_ids[0]])["msgIds"]
            require(got == [], f"reading again answered {got}, expected []")
        with self.check(READ, "without msgIds (absent or null) every unread message from peerId is marked"):
            if len(a_ids) != 3:
                raise NotRun("sending failed")
            got = self.read(r, pa)["msgIds"]
            require(sorted(got) == sorted(a_ids[1:]), f"answered {got}, expected {a_ids[1:]}")
            extra = self.send(pa, r, "one more")["msgId"]
            got = self.read(r, pa, None)["msgIds"]
            require(got == [extra], f"msgIds null answered {got}, expected [{extra}]")
            a_ids.append(extra)
        with self.check(READ, "read messages leave the unread list and show status read in history"):
            if not b_id or len(a_ids) != 4:
                raise NotRun("an earlier step failed")
            got = self.unread_ids(r)
            require(got == [b_id], f"unread after reading peer a: {got}, expected only b's [{b_id}]")
            statuses = self.statuses(r, pa)
            require(all(statuses.get(m) == "read" for m in a_ids), f"history statuses: {statuses}")
        with self.check(READ, "a missing or invalid userId, peerId or msgIds is 400"):
            good = {"userId": r, "peerId": pa, "msgIds": ["m1"]}
            cases = [("userId missing", without(good, "userId")),
                     ("peerId missing", without(good, "peerId")),
                     ("peerId a string", {**good, "peerId": str(pa)}),
                     ("peerId 0", {**good, "peerId": 0}),
                     ("msgIds a string", {**good, "msgIds": "m1"}),
                     ("msgIds with an invalid msgId", {**good, "msgIds": ["a b"]}),
                     ("msgIds with a number", {**good, "msgIds": [5]})]
            for case, body in cases:
                bad_request(self.svc.post("/v1/messages/read", body), case)
        self.not_json_refused(READ, "/v1/messages/read")
        self.secret_required(READ, "POST", "/v1/messages/read", json_body={"userId": r, "peerId": pa})

    # -- GET /v1/messages/history ---------------------------------------------------------------
    def check_history(self) -> None:
        u, v = self.data.user_ids(2)
        ids: list[str] = []
        with self.check(HISTORY, "lists both directions newest first, ChatMessage plus status"):
            for i in range(5):
                sender, recipient = (u, v) if i % 2 == 0 else (v, u)
                ids.append(self.send(sender, recipient, f"history #{i}")["msgId"])
            self.delivered(v, [(u, ids[2])])          # seq 3: delivered
            self.read(u, v, [ids[1]])                 # seq 2: read
            page = self.history(u, v)
            seqs = [m["seq"] for m in page["messages"]]
            require(seqs == [5, 4, 3, 2, 1], f"seqs were {seqs}, expected newest first [5, 4, 3, 2, 1]")
            got = [m["msgId"] for m in page["messages"]]
            require(got == ids[::-1], f"msgIds were {got}, expected {ids[::-1]}")
            statuses = [m["status"] for m in page["messages"]]
            require(statuses == ["sent", "sent", "delivered", "read", "sent"],
                    f"statuses newest first were {statuses}, expected "
                    "['sent', 'sent', 'delivered', 'read', 'sent']")
            require(page["hasMore"] is False, "hasMore must be false when everything was listed")
        with self.check(HISTORY, "is the same list for either user of the conversation"):
            if len(ids) != 5:
                raise NotRun("sending failed")
            mine = [m["msgId"] for m in self.history(u, v)["messages"]]
            theirs = [m["msgId"] for m in self.history(v, u)["messages"]]
            require(mine == theirs, f"userId={u}: {mine}; userId={v}: {theirs}")
        with self.check(HISTORY, "beforeSeq is exclusive; limit pages with hasMore"):
            if len(ids) != 5:
                raise NotRun("sending failed")
            cases = [({"beforeSeq": 4}, [3, 2, 1], False), ({"beforeSeq": 1}, [], False),
                     ({"limit": 2}, [5, 4], True), ({"beforeSeq": 4, "limit": 2}, [3, 2], True),
                     ({"beforeSeq": 2, "limit": 2}, [1], False), ({"beforeSeq": 99}, [5, 4, 3, 2, 1], False)]
            for params, seqs, more in cases:
                page = self.history(u, v, **params)
                got = [m["seq"] for m in page["messages"]]
                require((got, page["hasMore"]) == (seqs, more),
                        f"{params}: seqs {got} hasMore {page['hasMore']}, expected {seqs} hasMore {more}")
        with self.check(HISTORY, "limit defaults to 50 and is capped at 200"):
            sender, recipient = self.bulk_conversation()
            pages = [self.history(recipient, sender, **p) for p in ({}, {"limit": 200}, {"limit": 1000})]
            got = [(len(p["messages"]), p["hasMore"]) for p in pages]
            require(got == [(50, True), (200, True), (200, True)],
                    f"(count, hasMore) for no limit, 200, 1000 were {got}, expected "
                    f"[(50, True), (200, True), (200, True)] (of {BULK})")
            top = pages[0]["messages"][0]["seq"]
            require(top == BULK, f"the newest seq was {top}, expected {BULK}")
        with self.check(HISTORY, "a limit that is not a positive integer is 400"):
            for value in NOT_LIMITS:
                bad_request(self.svc.get("/v1/messages/history",
                                         params={"userId": u, "peerId": v, "limit": value}), f"limit={value}")
        with self.check(HISTORY, "a missing or invalid userId, peerId or beforeSeq is 400"):
            for params, case in (({"peerId": v}, "no userId"), ({"userId": u}, "no peerId"),
                                 ({"userId": "x", "peerId": v}, "userId=x"),
                                 ({"userId": u, "peerId": "-1"}, "peerId=-1"),
                                 ({"userId": u, "peerId": v, "beforeSeq": "x"}, "beforeSeq=x"),
                                 ({"userId": u, "peerId": v, "beforeSeq": "-1"}, "beforeSeq=-1")):
                bad_request(self.svc.get("/v1/messages/history", params=params), case)
        self.secret_required(HISTORY, "GET", "/v1/messages/history", params={"userId": u, "peerId": v})




def sent_shape(answer: dict) -> None:
    """SendMessage's answer: a ChatMessage plus duplicate, delivered, deliveredAt."""
    chat_message(answer, "the answer")
    for key in ("duplicate", "delivered"):
        require(isinstance(answer.get(key), bool), f"the answer's {key} must be a boolean, "
                                                   f"got {short(answer.get(key))}")
    require("deliveredAt" in answer, "the answer lacks deliveredAt")
    if answer["deliveredAt"] is not None:
        ms_timestamp(answer["deliveredAt"], "the answer's deliveredAt")


def marked_shape(m: dict, what: str) -> None:
    user_id(m.get("fromUserId"), f"{what}.fromUserId")
    require(isinstance(m.get("msgId"), str), f"{what}.msgId must be a string")
    ms_timestamp(m.get("deliveredAt"), f"{what}.deliveredAt")
