// SkyeIM web page: friend requests and blocking (docs/protocol.md "Friend requests and
// blocking"). A module of the page: app.js calls createRequests({...}) with what it
// shares (the REST helper, the open conversation, the friend list's refresh), and
// listen(client) for every new client.
// Every piece of user content reaches the DOM through textContent, never as HTML.
export function createRequests(app) {
  const $ = (id) => document.getElementById(id);
  // app: {api, current(), closeConversation(), refreshFriends(), name(id), say(text, ok)}
  const incoming = new Map();      // fromUserId -> {userId, username, createdAt}

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function render() {
    const items = [...incoming.values()].sort((a, b) => a.createdAt - b.createdAt || a.userId - b.userId)
      .map((r) => {
        const li = el("li", "request");
        li.dataset.userId = String(r.userId);
        const name = el("span", "friend-name", r.username || `User #${r.userId}`);
        const acceptBtn = el("button", "primary small", "Accept");
        acceptBtn.type = "button";
        acceptBtn.dataset.action = "accept";
        acceptBtn.addEventListener("click", () => answer(r, "accept"));
        const declineBtn = el("button", "secondary small", "Decline");
        declineBtn.type = "button";
        declineBtn.dataset.action = "decline";
        declineBtn.addEventListener("click", () => answer(r, "decline"));
        li.append(name, acceptBtn, declineBtn);
        return li;
      });
    $("request-list").replaceChildren(...items);
    $("friend-requests").hidden = items.length === 0;
  }

  async function answer(r, action) {
    try {
      await app.api("POST", `/api/friends/requests/${r.userId}/${action}`);
      app.say(action === "accept" ? `${r.username || "They"} is now your friend.`
        : `Declined ${r.username || "the request"}.`, true);
      if (action === "accept") app.refreshFriends();
    } catch (err) {
      if (err.status !== 404) { app.say(err.message, false); return; }   // 404: already answered
    }
    incoming.delete(r.userId);
    render();
  }

  function add(d) {
    if (!Number.isInteger(d.fromUserId)) return;
    incoming.set(d.fromUserId, { userId: d.fromUserId, username: d.username || null,
      createdAt: Number.isInteger(d.createdAt) ? d.createdAt : Date.now() });
  }

  async function refresh() {
    try {
      const got = await app.api("GET", "/api/friends/requests");
      incoming.clear();
      for (const r of got.incoming || []) add({ fromUserId: r.userId, username: r.username, createdAt: r.createdAt });
      render();
    } catch (err) { /* 501: a Friend service without requests; others: the next connect */ }
  }

  async function blockCurrent() {
    const id = app.current();
    if (!Number.isInteger(id)) return;
    const name = app.name(id);         // before friend_removed takes the friend away
    try {
      await app.api("POST", "/api/blocks", { userId: id });
      app.say(`Blocked ${name}.`, true);
      app.closeConversation();
      app.refreshFriends();
    } catch (err) { app.say(err.message, false); }
  }

  return {
    listen(client) {
      client.on("friend_request", (d) => { add(d); render(); });
      client.on("friend_requests", (d) => {
        incoming.clear();
        for (const r of d.requests || []) add(r);
        render();
      });
      client.on("friend_request_answered", (d) => {
        app.say(`${app.name(d.userId)} ${d.accepted ? "accepted" : "declined"} your friend request.`,
          Boolean(d.accepted));
        if (d.accepted) app.refreshFriends();
      });
    },
    refresh,
    reset() { incoming.clear(); render(); },
    init() { $("block-button").addEventListener("click", blockCurrent); },
  };
}
