// A real OpenID Connect provider for tests and the local demo: node's certified `oidc-provider`
// with discovery, authorization code + PKCE (required), JWKS-signed ID tokens, userinfo and
// RP-initiated logout, plus a plain login form checking demo users' passwords.
//
// Configuration comes from the environment (see ../../docs/demo.md):
//   OIDC_ISSUER         http://127.0.0.1:9400    the issuer URL (also where it listens)
//   OIDC_LISTEN         127.0.0.1               address to bind
//   OIDC_CLIENTS        JSON list of {client_id, client_secret, redirect_uris, post_logout_redirect_uris}
//   OIDC_USERS          JSON map id -> {password, email, name, groups}
//   OIDC_USERS_FILE     the same map in a file (wins over OIDC_USERS; claims with any characters)
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { randomBytes } from "node:crypto";
import Provider from "oidc-provider";

const issuer = process.env.OIDC_ISSUER || "http://127.0.0.1:9400";
const listen = process.env.OIDC_LISTEN || "127.0.0.1";
const port = Number(new URL(issuer).port || 80);
const clients = JSON.parse(process.env.OIDC_CLIENTS || "[]");
const users = process.env.OIDC_USERS_FILE
  ? JSON.parse(readFileSync(process.env.OIDC_USERS_FILE, "utf8"))
  : JSON.parse(process.env.OIDC_USERS ||
  '{"alice": {"password": "alice-password", "email": "alice@example.org", "name": "Alice", "groups": ["lab"]}}');

for (const client of clients) {
  client.grant_types ??= ["authorization_code"];
  client.response_types ??= ["code"];
  client.token_endpoint_auth_method ??= "client_secret_basic";
}

const configuration = {
  clients,
  pkce: { methods: ["S256"], required: () => true },
  features: {
    devInteractions: { enabled: false }, // our own form below checks passwords
    rpInitiatedLogout: { enabled: true },
    userinfo: { enabled: true },
  },
  claims: {
    openid: ["sub"],
    email: ["email", "email_verified"],
    profile: ["name", "preferred_username"],
    groups: ["groups"],
  },
  scopes: ["openid", "email", "profile", "groups", "offline_access"],
  conformIdTokenClaims: false, // claims in the ID token too, as many providers do
  cookies: { keys: [randomBytes(32).toString("hex")] },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    const user = users[id];
    if (!user) return undefined;
    return {
      accountId: id,
      async claims() {
        return {
          sub: id, email: user.email, email_verified: true, name: user.name,
          preferred_username: id, groups: user.groups || [],
        };
      },
    };
  },
};

const provider = new Provider(issuer, configuration);
provider.proxy = true;

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(res, status, title, body) {
  res.writeHead(status, { "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store" });
  res.end(`<!doctype html><html><head><meta charset="utf-8"><title>${escape(title)}</title></head>` +
          `<body><h1>${escape(title)}</h1>${body}</body></html>`);
}

function loginForm(res, uid, message) {
  page(res, message ? 401 : 200, "Sign in", `
    ${message ? `<p id="error">${escape(message)}</p>` : ""}
    <form method="post" action="/interaction/${escape(uid)}/login">
      <label>User <input name="login" autocomplete="username" autofocus></label>
      <label>Password <input name="password" type="password" autocomplete="current-password"></label>
      <button type="submit">Sign in</button>
    </form>`);
}

async function formBody(req) {
  let raw = "";
  for await (const chunk of req) {
    raw += chunk;
    if (raw.length > 10000) throw new Error("form too large");
  }
  return Object.fromEntries(new URLSearchParams(raw));
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return page(res, 400, "Bad request", "<p>Unknown interaction.</p>");
  const { prompt, params, session } = details;
  if (prompt.name === "login") {
    if (action !== "login" || req.method !== "POST") return loginForm(res, uid);
    const { login = "", password = "" } = await formBody(req);
    const user = users[login];
    if (!user || user.password !== password) return loginForm(res, uid, "Wrong user or password.");
    return provider.interactionFinished(req, res, { login: { accountId: login } },
                                        { mergeWithLastSubmission: false });
  }
  // Consent: the demo's clients are first-party, grant what they asked for.
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const missing = prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(" "));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
    grant.addResourceScope(indicator, scopes.join(" "));
  }
  const grantId = await grant.save();
  return provider.interactionFinished(req, res, { consent: { grantId } },
                                      { mergeWithLastSubmission: true });
}

const callback = provider.callback();
const server = createServer(async (req, res) => {
  const match = new URL(req.url, issuer).pathname.match(/^\/interaction\/([\w-]+)(?:\/(login))?$/);
  if (!match) return callback(req, res);
  try {
    await interaction(req, res, match[1], match[2]);
  } catch (err) {
    console.error("interaction failed:", err);
    page(res, 400, "Sign-in failed", `<p>${escape(err.message)}</p>`);
  }
});

server.listen(port, listen, () => {
  console.log(`OIDC provider ${issuer} listening on ${listen}:${port}; users: ${Object.keys(users).join(", ")}`);
});
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => server.close(() => process.exit(0)));
