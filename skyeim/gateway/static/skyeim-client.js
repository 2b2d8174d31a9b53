// SkyeIM client: the connection logic of a SkyeIM front end, as one dependency-free
// ES module (no DOM, no globals). Served by the gateway at /static/skyeim-client.js;
// usable from a bundler as is. Wire contract: PROTOCOL.md; docs/integration.md,
// "JavaScript client", shows it in use.
//
//   import { SkyeClient } from "/static/skyeim-client.js";
//   const client = new SkyeClient({ url: "ws://host:10300/ws", token });
//   client.on("chat", (m) => show(m));
//   client.connect();
//   const msgId = client.send(2, "hello");     // acked "sent", then "delivered"
//
// What it does for the application:
// - one WebSocket, reconnected after a drop with exponential backoff and full
//   jitter (uniform in [0, min(cap, base * 2^(attempt-1))]), except after 4001
//   (replaced by a newer login) and 4003 (token expired or revoked);
// - an outbox: every chat stays in it until acked "sent" and is sent again, with
//   the same msgId, once on each new connection (the gateway is idempotent on
//   msgId, so it is stored and delivered once); errors "unavailable",
//   "rate_limited" and "internal" keep it there and try again shortly;
// - sync after every "connected": for each conversation it knows it asks for what
//   came after the newest seq it holds (docs/protocol.md "Sync"), following hasMore;
// - an app-level ping every 25 s (browsers cannot see protocol pings), and a
//   socket that stays silent a whole ping interval is treated as dead (4004);
// - every server frame as a typed event (see EVENTS below), checked for the fields
//   its type requires; every frame, known or not, also as "frame".

// Close codes (PROTOCOL.md section 4) and error codes: the same values as
// skyeim/protocol/codes.py (tests/test_codes.py keeps them in step).
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  PROTOCOL_ERROR: 1002,
  ABNORMAL: 1006,
  INVALID_DATA: 1007,
  TOO_BIG: 1009,
  INTERNAL: 1011,
  REPLACED: 4001,
  TOO_SLOW: 4002,
  TOKEN_EXPIRED: 4003,
  HEARTBEAT_TIMEOUT: 4004,
});

export const ErrorCode = Object.freeze({
  BAD_JSON: "bad_json",
  BAD_REQUEST: "bad_request",
  UNKNOWN_TYPE: "unknown_type",
  UNSUPPORTED_FRAME: "unsupported_frame",
  NOT_FRIENDS: "not_friends",
  RATE_LIMITED: "rate_limited",
  UNAUTHORIZED: "unauthorized",
  FORBIDDEN: "forbidden",
  REJECTED: "rejected",
  UNAVAILABLE: "unavailable",
  INTERNAL: "internal",
  NOT_WEBSOCKET: "not_websocket",
  FORBIDDEN_ORIGIN: "forbidden_origin",
  OVERLOADED: "overloaded",
  TOO_MANY_CONNECTIONS: "too_many_connections",
  TOO_MANY_DEVICES: "too_many_devices",
  NOT_FOUND: "not_found",
  METHOD_NOT_ALLOWED: "method_not_allowed",
  CONFLICT: "conflict",
  TOO_LARGE: "too_large",
  DB_LOCKED: "db_locked",
  DB_FULL: "db_full",
  TOO_MANY_MEMBERS: "too_many_members",
  UNSUPPORTED_TYPE: "unsupported_type",
  NOT_SUPPORTED: "not_supported",
  ERROR: "error",
  TOO_LATE: "too_late",
  RECALLED: "recalled",
  MUTED: "muted",
});

// The client's own connection states ("state" events).
export const State = Object.freeze({
  IDLE: "idle",               // not started
  CONNECTING: "connecting",   // a socket is opening, or open and not yet "connected"
                              // ({attempt}: 0 at first, then the reconnect attempt's number)
  LIVE: "live",               // "connected" received: caught up
  WAITING: "waiting",         // dropped; reconnect attempt {attempt} in {delay} ms, at {at}
  REPLACED: "replaced",       // closed with 4001: connect() again only if the user asks
  EXPIRED: "expired",         // closed with 4003: a new token is needed
  CLOSED: "closed",           // close() was called
});

// Errors after which a chat stays in the outbox and goes out again shortly
const RETRIED_ERRORS = new Set([ErrorCode.UNAVAILABLE, ErrorCode.RATE_LIMITED, ErrorCode.INTERNAL]);

const isId = (v) => Number.isSafeInteger(v) && v > 0;
const isStr = (v) => typeof v === "string";
const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

// Server frames -> what their data must hold to be emitted as that type's event.
// A frame that does not pass (or of a type not listed) is only a "frame" event.
const EVENTS = Object.freeze({
  connected: (d) => isId(d.userId),
  pong: () => true,
  chat: (d) => isStr(d.msgId) && isId(d.fromUserId) && isId(d.toUserId) && isStr(d.content),
  ack: (d) => isStr(d.msgId) && (d.status === "sent" || d.status === "delivered"),
  read: (d) => isId(d.peerId) && Array.isArray(d.msgIds),
  online: (d) => isId(d.userId),
  offline: (d) => isId(d.userId),
  error: (d) => isStr(d.code),
  token_expiring: (d) => Number.isFinite(d.expiresAt),
  typing: (d) => isId(d.fromUserId),
  notice: (d) => isStr(d.event) && "data" in d,
  friend_added: (d) => isId(d.userId),
  friend_removed: (d) => isId(d.userId),
  friend_request: (d) => isId(d.fromUserId),
  friend_request_answered: (d) => isId(d.userId) && typeof d.accepted === "boolean",
  friend_requests: (d) => Array.isArray(d.requests),
  // a 1:1 message's (toUserId) or a group message's (groupId)
  message_recalled: (d) => isStr(d.msgId) && isId(d.fromUserId) && (isId(d.toUserId) || isId(d.groupId)),
  message_edited: (d) => isStr(d.msgId) && isId(d.fromUserId) && (isId(d.toUserId) || isId(d.groupId))
    && isStr(d.content),
  messages_deleted: (d) => isId(d.peerId) && Array.isArray(d.msgIds),
  sync_messages: (d) => (isId(d.peerId) || isId(d.groupId)) && Array.isArray(d.messages),
  sync_complete: (d) => Array.isArray(d.conversations),
  groupchat: (d) => isId(d.groupId) && isStr(d.msgId) && isId(d.fromUserId),
  group_read: (d) => isId(d.groupId) && isId(d.userId),
  group_unread: (d) => Array.isArray(d.groups),
  conversations: (d) => Array.isArray(d.items),
  conversation_updated: (d) => isId(d.peerId) || isId(d.groupId),
  group_changed: (d) => isId(d.groupId) && isStr(d.change) && isId(d.byUserId),
});
export const SERVER_FRAME_TYPES = Object.freeze(Object.keys(EVENTS));

const DEFAULTS = Object.freeze({
  platform: "web",          // the ?platform= of the handshake (web, ios, android, desktop)
  backoff: { baseMs: 500, capMs: 15000 },
  pingMs: 25000,            // app-level ping interval
  sendBurst: 40,            // chat frames per second while the outbox drains
  retryMs: 2000,            // after a retried error, plus up to half of it again (jitter)
  sync: true,               // sync the known conversations after every "connected"
  syncRounds: 50,           // follow-up sync frames per connection (each brings up to 1000)
  storage: null,            // a Storage-like {getItem, setItem, removeItem}: the outbox survives a reload
  storageKey: "skyeim.outbox",
  random: Math.random,      // the jitter's source (tests pass their own)
});

const SYNC_MAX_CONVERSATIONS = 100;  // the gateway's limit per sync frame
const SYNC_LIMIT = 200;              // messages per sync page
const READ_CHUNK = 1000;             // msgIds per read frame

/** A random UUID4 (crypto.randomUUID needs a secure context; a LAN page may be plain http). */
export function uuid4() {
  const b = globalThis.crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** The largest delay before reconnect attempt `attempt` (1, 2, ...), in ms. */
export function backoffCeiling(attempt, { baseMs, capMs }) {
  return Math.min(capMs, baseMs * 2 ** Math.min(attempt - 1, 30));
}

/** Whether a client should reconnect by itself after a close with this code. */
// After these a client does not reconnect by itself: another login took over, a new
// token is needed first, or the same frames would earn the same close again (as the
// Python SDK; unknown codes, e.g. 1012 or 1013, reconnect).
export function reconnectsAfter(code) {
  return ![CloseCode.REPLACED, CloseCode.TOKEN_EXPIRED, CloseCode.NORMAL, CloseCode.PROTOCOL_ERROR,
           CloseCode.INVALID_DATA, CloseCode.TOO_BIG, 1003, 1005, 1008, 1010].includes(code);
}

export class SkyeClient {
  /**
   * @param {object} options
   * @param {string} options.url     the gateway's socket, e.g. "wss://chat.example.com/ws"
   * @param {string} options.token   a JWT of the gateway's Auth.AccessSecret
   * Optional: platform, backoff {baseMs, capMs}, pingMs, sendBurst, retryMs, sync,
   * syncRounds, storage, storageKey, random, WebSocket (a constructor; default the global).
   */
  constructor(options) {
    const o = { ...DEFAULTS, ...options };
    if (!isStr(o.url) || !o.url) throw new TypeError("SkyeClient needs a url");
    this.options = o;
    this.url = o.url;
    this.token = o.token || "";
    this.WebSocket = o.WebSocket || globalThis.WebSocket;
    this._listeners = new Map();    // event type -> Set of functions
    this._state = State.IDLE;
    this._ws = null;
    this._opened = false;           // the current socket reached "open"
    this._connId = 0;               // counts connections that reached "connected"
    this._attempt = 0;              // failed attempts since the last "connected"
    this._userId = null;
    this._outbox = new Map();       // msgId -> {msgId, toUserId, content, contentType, createdAt, sentOn}
    this._seqs = new Map();         // peerId -> newest seq held (what sync asks after)
    this._syncRounds = 0;
    this._syncIds = 0;
    this._lastFrameAt = 0;
    this._lastPingAt = 0;
    this._timers = { reconnect: null, ping: null, pump: null };
    this._loadOutbox();
  }

  // -- state -----------------------------------------------------------------------

  /** One of State's values. */
  get state() { return this._state; }
  /** "connected" was received on the current socket. */
  get live() { return this._state === State.LIVE; }
  /** The user id the gateway confirmed in "connected" (null before). */
  get userId() { return this._userId; }
  /** The chats not yet acked "sent", oldest first: [{msgId, toUserId, content, contentType, createdAt}]. */
  get outbox() {
    return [...this._outbox.values()].map(({ sentOn, ...item }) => item);
  }
  /** The newest seq held per conversation: Map(peerId -> seq). */
  get conversations() { return new Map(this._seqs); }

  // -- events ----------------------------------------------------------------------

  /** Call `fn(data)` on each event of `type`; returns a function that unsubscribes. */
  on(type, fn) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    const set = this._listeners.get(type);
    if (set) set.delete(fn);
  }

  _emit(type, data) {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(data);
      } catch (e) {      // one listener's bug must not stop the client; it still surfaces
        setTimeout(() => { throw e; }, 0);
      }
    }
  }

  _setState(state, extra) {
    this._state = state;
    this._emit("state", { state, ...extra });
  }

  // -- connecting ------------------------------------------------------------------

  /** Connect now (also: retry now while waiting, or take over after "replaced").
   *  Does nothing while a socket is opening or open. */
  connect() {
    if (this._ws) return;
    clearTimeout(this._timers.reconnect);
    this._timers.reconnect = null;
    this._setState(State.CONNECTING, { attempt: this._attempt });
    const sep = this.url.includes("?") ? "&" : "?";
    const query = `platform=${encodeURIComponent(this.options.platform)}&token=${encodeURIComponent(this.token)}`;
    let ws;
    try {
      ws = new this.WebSocket(`${this.url}${sep}${query}`);
    } catch (e) {         // e.g. a malformed url: as good as a refused connection
      this._closed(CloseCode.ABNORMAL, String(e && e.message), false);
      return;
    }
    this._ws = ws;
    this._opened = false;
    ws.onopen = () => {
      this._opened = true;
      this._lastFrameAt = this._lastPingAt = Date.now();
      clearInterval(this._timers.ping);
      this._timers.ping = setInterval(() => this._heartbeat(), this.options.pingMs);
    };
    ws.onmessage = (ev) => {
      this._lastFrameAt = Date.now();
      let frame;
      try { frame = JSON.parse(ev.data); } catch (e) { return; }
      if (isObj(frame) && isStr(frame.type)) this._onFrame(frame.type, frame.data);
    };
    ws.onclose = (ev) => {
      if (this._ws !== ws) return;
      this._detach();
      this._closed(ev.code, ev.reason, this._opened);
    };
  }

  /** Close for good (1000): no reconnect; the outbox is kept (and stored). */
  close() {
    clearTimeout(this._timers.reconnect);
    clearTimeout(this._timers.pump);
    const ws = this._detach();
    if (ws) { try { ws.close(CloseCode.NORMAL); } catch (e) { /* already closing */ } }
    this._setState(State.CLOSED);
  }

  /** A new token for the next connection; while live it is also sent as `auth`
   *  (PROTOCOL.md section 5: refresh before `exp` passes). */
  setToken(token) {
    this.token = token;
    if (this.live) this.sendFrame("auth", { token });
  }

  _detach() {
    const ws = this._ws;
    this._ws = null;
    clearInterval(this._timers.ping);
    if (ws) ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    return ws;
  }

  _heartbeat() {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return;
    if (this._lastFrameAt < this._lastPingAt) {     // not even a pong since the last ping
      this._detach();
      try { ws.close(); } catch (e) { /* ignore */ }
      this._closed(CloseCode.HEARTBEAT_TIMEOUT, "no answer to ping", true);
      return;
    }
    this._lastPingAt = Date.now();
    this.sendFrame("ping", null);
  }

  _closed(code, reason, opened) {
    clearTimeout(this._timers.pump);
    for (const item of this._outbox.values()) item.sentOn = null;
    const reconnect = reconnectsAfter(code) && this._state !== State.CLOSED;
    this._emit("close", { code, reason: reason || "", opened, reconnect });
    if (this._state === State.CLOSED) return;
    if (code === CloseCode.REPLACED) { this._setState(State.REPLACED, { code }); return; }
    if (code === CloseCode.TOKEN_EXPIRED) { this._setState(State.EXPIRED, { code }); return; }
    this._attempt += 1;
    const ceiling = backoffCeiling(this._attempt, this.options.backoff);
    const delay = Math.round(this.options.random() * ceiling);   // full jitter
    this._timers.reconnect = setTimeout(() => this.connect(), delay);
    this._setState(State.WAITING, { code, attempt: this._attempt, delay, at: Date.now() + delay });
  }

  // -- sending ---------------------------------------------------------------------

  /** Send any client frame now; false when not connected (nothing is queued). */
  sendFrame(type, data) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return false;
    try { ws.send(JSON.stringify({ type, data })); } catch (e) { return false; }
    return true;
  }

  /** A chat through the outbox: sent now if live, else after the next "connected";
   *  again after each reconnect until acked "sent". Returns its msgId. */
  send(toUserId, content, { msgId = uuid4(), contentType = 1 } = {}) {
    if (!isId(toUserId)) throw new TypeError("toUserId must be a positive integer");
    if (!isStr(content) || !content) throw new TypeError("content must be a non-empty string");
    const old = this._outbox.get(msgId);
    this._outbox.set(msgId, { msgId, toUserId, content, contentType,
      createdAt: old ? old.createdAt : Date.now(), sentOn: null });
    this._saveOutbox();
    this._pump();
    return msgId;
  }

  /** Stop sending `msgId` (e.g. it is known stored, or the user gave up). */
  discard(msgId) {
    const had = this._outbox.delete(msgId);
    if (had) this._saveOutbox();
    return had;
  }

  /** Read receipt for messages from `peerId` (all unread ones when msgIds is empty). */
  markRead(peerId, msgIds = []) {
    if (!this.live) return false;
    if (msgIds.length === 0) return this.sendFrame("read", { peerId, msgIds: [] });
    for (let i = 0; i < msgIds.length; i += READ_CHUNK) {
      if (!this.sendFrame("read", { peerId, msgIds: msgIds.slice(i, i + READ_CHUNK) })) return false;
    }
    return true;
  }

  /** Send what is in the outbox and was not yet sent on this connection, at most
   *  sendBurst a second (the gateway's rate limit is per connection). */
  _pump() {
    clearTimeout(this._timers.pump);
    if (!this.live) return;
    let sent = 0;
    for (const item of this._outbox.values()) {
      if (item.sentOn === this._connId) continue;
      if (sent >= this.options.sendBurst) {
        this._timers.pump = setTimeout(() => this._pump(), 1000);
        return;
      }
      const ok = this.sendFrame("chat", { msgId: item.msgId, toUserId: item.toUserId,
        content: item.content, contentType: item.contentType });
      if (!ok) return;
      item.sentOn = this._connId;
      sent += 1;
    }
  }

  _loadOutbox() {
    const { storage, storageKey } = this.options;
    if (!storage) return;
    let items = [];
    try { items = JSON.parse(storage.getItem(storageKey) || "[]"); } catch (e) { /* ignore */ }
    for (const it of Array.isArray(items) ? items : []) {
      if (!isObj(it) || !isStr(it.msgId) || !isId(it.toUserId) || !isStr(it.content)) continue;
      this._outbox.set(it.msgId, { msgId: it.msgId, toUserId: it.toUserId, content: it.content,
        contentType: it.contentType || 1, createdAt: it.createdAt || Date.now(), sentOn: null });
    }
  }

  _saveOutbox() {
    const { storage, storageKey } = this.options;
    if (!storage) return;
    try { storage.setItem(storageKey, JSON.stringify(this.outbox)); } catch (e) { /* full */ }
  }

  // -- recall, edit, delete for me (docs/protocol.md "Recall, edit, delete") ----------

  /** Take back a chat this user sent (within Chat.RecallWindow), or with `groupId` its
   *  message to that group: both users (every member) get "message_recalled" (with
   *  `groupId` for a group's); a refusal is an "error" (too_late, not_found) with its msgId. */
  recall(msgId, groupId) {
    return this.sendFrame("recall", isId(groupId) ? { msgId, groupId } : { msgId });
  }

  /** Replace the content of a chat this user sent (within Chat.EditWindow), or with
   *  `groupId` of its group message: both users (every member) get "message_edited". */
  edit(msgId, content, groupId) {
    return this.sendFrame("edit", isId(groupId) ? { msgId, content, groupId } : { msgId, content });
  }

  /** Hide messages of the conversation with `peerId` from this user's history only:
   *  this user's devices get "messages_deleted". */
  deleteForMe(peerId, msgIds) { return this.sendFrame("delete", { peerId, msgIds }); }

  // -- sync -------------------------------------------------------------------------

  /** The newest seq held of the conversation with `peerId` (sync asks after it). */
  track(peerId, seq) {
    if (!isId(peerId) || !isId(seq)) return;
    if (!(this._seqs.get(peerId) >= seq)) this._seqs.set(peerId, seq);
  }

  /** Ask for what came after the newest seq held, in every known conversation. */
  syncNow() {
    const ranges = [...this._seqs].map(([peerId, afterSeq]) => ({ peerId, afterSeq }));
    this._sendSync(ranges);
  }

  _sendSync(ranges) {
    for (let i = 0; i < ranges.length; i += SYNC_MAX_CONVERSATIONS) {
      this._syncIds += 1;
      // changedSince: recalls and edits since the last complete sync (0 at first: all)
      this.sendFrame("sync", { requestId: `js-${this._connId}-${this._syncIds}`,
        conversations: ranges.slice(i, i + SYNC_MAX_CONVERSATIONS), limit: SYNC_LIMIT,
        changedSince: this._changedSince || 0 });
    }
  }

  // -- frames from the gateway --------------------------------------------------------

  _onFrame(type, raw) {
    const data = isObj(raw) ? raw : {};
    const valid = EVENTS[type] ? EVENTS[type](data) : false;
    if (valid) this._before(type, data);
    this._emit("frame", { type, data: raw });
    if (valid) {
      this._emit(type, type === "error" ? { ...data, retrying: this._retrying(data) } : data);
      this._after(type, data);
    }
  }

  /** What the client itself does with a frame, before the application hears of it. */
  _before(type, d) {
    const me = this._userId;
    switch (type) {
      case "connected":         // live before the application hears of it: it may send at once
        this._userId = d.userId;
        this._connId += 1;
        this._attempt = 0;
        this._syncRounds = 0;
        this._setState(State.LIVE, { userId: d.userId });
        break;
      case "chat":
        this.track(d.fromUserId === me ? d.toUserId : d.fromUserId, d.seq);
        break;
      case "ack": {
        const item = this._outbox.get(d.msgId);
        if (item && !isId(d.groupId)) {
          this.track(item.toUserId, d.seq);
          if (d.status === "sent" || d.status === "delivered") this.discard(d.msgId);
        }
        break;
      }
      case "sync_messages":
        if (isId(d.peerId)) {
          for (const m of d.messages) {
            if (!isObj(m)) continue;
            this.track(d.peerId, m.seq);
            if (m.fromUserId === me) this.discard(m.msgId);     // stored: no resend needed
          }
        }
        break;
      case "error": {
        const item = isStr(d.msgId) ? this._outbox.get(d.msgId) : null;
        if (!item) break;
        if (RETRIED_ERRORS.has(d.code)) {
          item.sentOn = null;          // stays; out again shortly
          clearTimeout(this._timers.pump);
          const wait = this.options.retryMs * (1 + this.options.random() / 2);
          this._timers.pump = setTimeout(() => this._pump(), wait);
        } else {
          this.discard(d.msgId);       // final: the application shows it failed
        }
        break;
      }
      default:
        break;
    }
  }

  _retrying(d) {
    return isStr(d.msgId) && this._outbox.has(d.msgId);
  }

  /** What the client does after the application has seen the frame. */
  _after(type, d) {
    if (type === "connected") {
      this._pump();
      if (this.options.sync) this.syncNow();
    } else if (type === "sync_complete" && this.options.sync) {
      // only its own syncs' (an application's, e.g. the page's group syncs, cover other ranges)
      if (Number.isSafeInteger(d.serverTime) && isStr(d.requestId) && d.requestId.startsWith("js-")) {
        this._changedSince = Math.max(this._changedSince || 0, d.serverTime);
      }
      const more = d.conversations.filter((c) => isObj(c) && c.hasMore && isId(c.peerId)
        && Number.isSafeInteger(c.lastSeq));
      if (more.length && ++this._syncRounds <= this.options.syncRounds) {
        this._sendSync(more.map((c) => ({ peerId: c.peerId, afterSeq: c.lastSeq })));
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Files, images and voice (extension: docs/protocol.md "Files, images and voice")

/**
 * Upload a File or Blob: POST /api/files (multipart/form-data, one part "file").
 * Resolves to {fileId, name, size, mime, width?, height?, url, thumbnailUrl?, expiresAt};
 * rejects with an Error carrying {status, code} (413 too_large, 415 unsupported_type, ...).
 */
export async function uploadFile(file, { token, baseUrl = "", name } = {}) {
  const form = new FormData();
  form.append("file", file, name || file.name || "file");
  let resp;
  try {
    resp = await fetch(`${baseUrl}/api/files`, {
      method: "POST", body: form, cache: "no-store",
      headers: token ? { Authorization: `Bearer ${token}` } : {},
    });
  } catch (e) {
    throw Object.assign(new Error("Cannot reach the server."), { status: 0, code: "network" });
  }
  let data = null;
  try { data = await resp.json(); } catch (e) { /* not JSON */ }
  if (!resp.ok) {
    throw Object.assign(new Error((data && data.message) || `${resp.status} ${resp.statusText}`),
      { status: resp.status, code: data && data.code });
  }
  return data;
}

/** The contentType of a file message for an upload's answer: 2 image, 4 voice, 3 file. */
export function fileContentType(upload) {
  if (upload.mime && upload.mime.startsWith("image/") && upload.width) return 2;
  if (upload.mime && upload.mime.startsWith("audio/")) return 4;
  return 3;
}

/** The content of a file message: JSON {fileId, name, size, mime, width?, height?}. */
export function fileContent(upload, extra = {}) {
  const body = { fileId: upload.fileId, name: upload.name, size: upload.size, mime: upload.mime };
  if (upload.width) { body.width = upload.width; body.height = upload.height; }
  return JSON.stringify({ ...body, ...extra });
}

/** The JSON object of a file message's content (contentType 2, 3, 4), or null. */
export function parseFileContent(contentType, content) {
  if (![2, 3, 4].includes(contentType) || typeof content !== "string" || content[0] !== "{") {
    return null;
  }
  try {
    const v = JSON.parse(content);
    return v && typeof v === "object" && typeof v.fileId === "string" ? v : null;
  } catch (e) {
    return null;
  }
}
