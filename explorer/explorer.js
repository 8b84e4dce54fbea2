// Glue for the Sparkwatch GraphQL explorer (GET /graphiql).
//
// React, ReactDOM and GraphiQL are loaded before this file as UMD globals from /graphiql/assets/
// (npm packages embedded into the binary by api/build.rs). This file adds a sign-in bar and a
// fetcher that sends the stored access token over HTTP and in the WebSocket connection_init.
(function () {
  'use strict';

  const ENDPOINT = '/graphql';
  // The graphql-ws client bundled in GraphiQL needs an absolute ws(s):// URL.
  const WS_ENDPOINT = (location.protocol === 'https:' ? 'wss:' : 'ws:') + '//' + location.host + ENDPOINT;
  const STORAGE_KEY = 'sparkwatch.explorer.session';
  const LOGIN_MUTATION =
    'mutation($input: LoginInput!){ login(input:$input){ accessToken refreshToken expiresAt user { email } } }';

  const form = document.getElementById('sign-in');
  const signedIn = document.getElementById('signed-in');
  const who = document.getElementById('who');
  const message = document.getElementById('auth-message');

  // ---- session storage: { accessToken, expiresAt, who } in localStorage --------------------

  function readSession() {
    try {
      const session = JSON.parse(localStorage.getItem(STORAGE_KEY));
      return session && typeof session.accessToken === 'string' ? session : null;
    } catch (_) {
      return null; // unparsable, or storage blocked by the browser
    }
  }

  function writeSession(session) {
    try {
      if (session) localStorage.setItem(STORAGE_KEY, JSON.stringify(session));
      else localStorage.removeItem(STORAGE_KEY);
    } catch (_) {
      // Storage blocked: the token then lives only until the page is reloaded.
    }
    memory = session;
  }

  let memory = readSession();

  // The current session, dropping it once its expiresAt has passed.
  function currentSession() {
    const expires = memory && Date.parse(memory.expiresAt);
    if (expires && expires <= Date.now()) {
      writeSession(null);
      showBar('Session expired; sign in again.', true);
    }
    return memory;
  }

  // ---- the bar -------------------------------------------------------------------------

  function showBar(text, isError) {
    const session = memory;
    form.hidden = !!session;
    signedIn.hidden = !session;
    who.textContent = session ? session.who : '';
    message.textContent = text || '';
    message.className = isError ? 'error' : '';
  }

  // Posts the login mutation; resolves to a session or throws an Error to show in the bar.
  async function login(loginName, password) {
    const response = await fetch(ENDPOINT, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ query: LOGIN_MUTATION, variables: { input: { login: loginName, password } } }),
    });
    let body;
    try {
      body = await response.json();
    } catch (_) {
      throw new Error('HTTP ' + response.status + ' ' + response.statusText + ' from ' + ENDPOINT);
    }
    if (body.errors && body.errors.length) {
      const error = body.errors[0];
      const code = error.extensions && error.extensions.code;
      throw new Error(code ? error.message + ' (' + code + ')' : error.message);
    }
    const result = body.data && body.data.login;
    if (!result || !result.accessToken) throw new Error('The server returned no access token.');
    return {
      accessToken: result.accessToken,
      expiresAt: result.expiresAt,
      who: (result.user && result.user.email) || loginName,
    };
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const button = form.querySelector('button');
    button.disabled = true;
    showBar('Signing in…');
    try {
      writeSession(await login(form.elements.login.value.trim(), form.elements.password.value));
      form.reset();
      showBar();
      renderGraphiQL();
    } catch (error) {
      showBar('Sign-in failed: ' + error.message, true);
    } finally {
      button.disabled = false;
    }
  });

  document.getElementById('sign-out').addEventListener('click', () => {
    writeSession(null);
    showBar('Signed out.');
    renderGraphiQL();
  });

  // Signing in or out in another tab updates this one too.
  window.addEventListener('storage', (event) => {
    if (event.key !== STORAGE_KEY) return;
    memory = readSession();
    showBar();
    renderGraphiQL();
  });

  // ---- GraphiQL ------------------------------------------------------------------------

  // Header names are case-insensitive; any "Authorization" typed into GraphiQL's headers
  // editor replaces the stored token instead of being sent next to it.
  function hasAuthorization(headers) {
    return !!headers && Object.keys(headers).some((name) => name.toLowerCase() === 'authorization');
  }

  // A fresh GraphiQL fetcher per request, so it always uses the token stored right now.
  // (Cheap: GraphiQL opens a new graphql-ws client per subscription anyway.) The toolkit
  // merges the headers editor's headers over `headers` for HTTP and over
  // `wsConnectionParams` for the connection_init payload.
  function fetcher(params, options) {
    const session = currentSession();
    const bearer = session && !hasAuthorization(options && options.headers) ? 'Bearer ' + session.accessToken : null;
    return GraphiQL.createFetcher({
      url: ENDPOINT,
      subscriptionUrl: WS_ENDPOINT, // protocol graphql-transport-ws (graphql-ws is bundled in GraphiQL)
      headers: bearer ? { Authorization: bearer } : {},
      wsConnectionParams: bearer ? { authorization: bearer } : {},
    })(params, options);
  }

  const root = ReactDOM.createRoot(document.getElementById('graphiql'));

  // Called again after signing in or out: a new fetcher identity makes GraphiQL re-fetch the
  // schema with the new credentials.
  function renderGraphiQL() {
    root.render(React.createElement(GraphiQL, { fetcher: (params, options) => fetcher(params, options) }));
  }

  currentSession();
  showBar(message.textContent, !!message.textContent);
  renderGraphiQL();
})();
