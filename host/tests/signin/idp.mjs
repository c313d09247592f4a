// A real OIDC provider (node `oidc-provider` 9, the certified implementation) playing the org's IdP
// in the sign-in tests: authorization code + PKCE, refresh tokens (offline_access), RS256 ID
// tokens carrying email and groups. Users come from IDP_USERS (JSON: {id: {email, groups, …}}).
//
// Test hooks (not part of OIDC): POST /admin/remove?user=ID deletes an account — its refresh
// tokens then fail with invalid_grant, as at a real IdP that deprovisioned someone;
// POST /admin/groups?user=ID&groups=a,b changes an account's groups.
//
// Usage: OIDC_PROVIDER=<module dir> IDP_USERS=… CLIENT_SECRET=… node idp.mjs
// Prints "LISTENING <port>" once it serves on 127.0.0.1.
import http from "node:http";
import crypto from "node:crypto";
import path from "node:path";

const { default: Provider } = await import(path.join(process.env.OIDC_PROVIDER, "lib/index.js"));

const users = JSON.parse(process.env.IDP_USERS || "{}");
const server = http.createServer();
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const port = server.address().port;
const issuer = `http://127.0.0.1:${port}`;

const { privateKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: "jwk" }), kid: "idp-rs256-1", use: "sig", alg: "RS256" };

const provider = new Provider(issuer, {
  clients: [{
    client_id: "conduit",
    client_secret: process.env.CLIENT_SECRET,
    // RFC 8252 §7.3: a native client's loopback redirect matches on any port (Conduit's test
    // listener binds port 0).
    application_type: "native",
    redirect_uris: ["http://127.0.0.1/oauth/callback", "http://127.0.0.1/auth/callback"],
    grant_types: ["authorization_code", "refresh_token"],
    response_types: ["code"],
    token_endpoint_auth_method: "client_secret_post",
  }],
  async findAccount(_ctx, id) {
    const u = users[id];
    if (!u) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: u.email, email_verified: u.email_verified ?? true, name: u.name, groups: u.groups || [] };
      },
    };
  },
  claims: { openid: ["sub"], email: ["email", "email_verified"], profile: ["name", "groups"] },
  scopes: ["openid", "offline_access", "email", "profile"],
  conformIdTokenClaims: false,
  jwks: { keys: [jwk] },
  pkce: { required: () => true },
  features: { devInteractions: { enabled: false } },
  cookies: { keys: [crypto.randomBytes(32).toString("hex")] },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  ttl: { AccessToken: 600, IdToken: 600, RefreshToken: 86400, Grant: 86400, Session: 86400, Interaction: 600 },
  renderError(ctx, out) {
    ctx.type = "html";
    ctx.body = `<h1>IdP error</h1><p id="error">${String(out.error)}</p>`;
  },
});
provider.proxy = false;

const readBody = (req) => new Promise((resolve) => {
  let data = "";
  req.on("data", (c) => { data += c; });
  req.on("end", () => resolve(new URLSearchParams(data)));
});

const callback = provider.callback();
server.on("request", async (req, res) => {
  const url = new URL(req.url, issuer);
  try {
    if (req.method === "POST" && url.pathname === "/admin/remove") {
      delete users[url.searchParams.get("user")];
      res.end("removed");
      return;
    }
    if (req.method === "POST" && url.pathname === "/admin/groups") {
      const u = users[url.searchParams.get("user")];
      if (u) u.groups = (url.searchParams.get("groups") || "").split(",").filter(Boolean);
      res.end("changed");
      return;
    }
    const m = /^\/interaction\/([^/]+)(\/login)?$/.exec(url.pathname);
    if (m) {
      const details = await provider.interactionDetails(req, res);
      if (details.prompt.name === "login") {
        if (req.method === "POST" && m[2]) {
          const form = await readBody(req);
          const id = form.get("login");
          if (!users[id]) {
            res.setHeader("content-type", "text/html");
            res.end(`<h1>Unknown user</h1><form method="post" action="/interaction/${m[1]}/login"><input name="login"><button>Sign in</button></form>`);
            return;
          }
          await provider.interactionFinished(req, res, { login: { accountId: id } }, { mergeWithLastSubmission: false });
          return;
        }
        res.setHeader("content-type", "text/html");
        res.end(`<h1>Corp IdP sign-in</h1><form method="post" action="/interaction/${m[1]}/login"><input name="login" id="login"><button id="submit">Sign in</button></form>`);
        return;
      }
      // Consent: granted as asked (the test org's policy).
      const { session, params } = details;
      const grant = new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
      grant.addOIDCScope(params.scope);
      const grantId = await grant.save();
      await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
      return;
    }
    callback(req, res);
  } catch (e) {
    res.statusCode = 500;
    res.end(String(e));
  }
});
console.log(`LISTENING ${port}`);
