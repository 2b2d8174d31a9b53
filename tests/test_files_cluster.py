"""Files across the nodes of a cluster (docs/protocol.md "Files, images and voice"):
the nodes share Files.Dir and the Message service's records, so a file uploaded on
one node is sent from it and downloaded from another, by token or by a link the
first node signed. Needs redis-server and PostgreSQL (skips without them)."""
from __future__ import annotations

import pytest

from cluster_harness import running_cluster
from files_harness import file_message, png_bytes
from harness import new_msg_id


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("files_cluster")
    with running_cluster(tmp, "files_cluster", nodes=2,
                         ws={"Files": {"Dir": str(tmp / "shared-files")}}) as system:
        yield system


def test_a_file_uploaded_on_one_node_is_read_on_another(cluster):
    n1, n2 = cluster[1], cluster[2]
    ann, bob, cat = cluster.users("fc_ann", "fc_bob", "fc_cat")
    data = png_bytes(100, 80)
    r = n1.api("POST", "/api/files", ann, files={"file": ("map.png", data, "image/png")})
    assert r.status_code == 200, r.text
    answer = r.json()
    fid = answer["fileId"]
    assert n2.api("GET", f"/api/files/{fid}", bob).status_code == 404

    a = n1.connect(ann)
    b = n2.connect(bob)
    msg_id = new_msg_id()
    a.send("chat", {"toUserId": bob.id, "msgId": msg_id, "contentType": 2,
                    "content": file_message(answer)})
    a.expect_ack(msg_id, "sent", skip=("pong", "online", "offline", "group_unread"))
    got = b.expect("chat", skip=("pong", "online", "offline", "group_unread"))
    assert got["msgId"] == msg_id
    r = n2.api("GET", f"/api/files/{fid}", bob)
    assert r.status_code == 200 and r.content == data
    assert n2.api("GET", f"/api/files/{fid}/thumbnail", bob).status_code == 200
    assert n1.api("GET", f"/api/files/{fid}", cat).status_code == 404
    # a link signed by node 1 works on node 2 (one key on every node)
    link = n2.api("GET", answer["url"])
    assert link.status_code == 200 and link.content == data
    a.close()
    b.close()
