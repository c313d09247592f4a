// Portkey's gateway listens on every interface and has no option against it. Preloaded with
// `node --require`, this pins every listener to 127.0.0.1 (tests/peers.rs, benches/suite.rs).
const net = require('net');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...a) {
  if (typeof a[0] === 'object' && a[0] !== null) { a[0] = { ...a[0], host: '127.0.0.1' }; }
  else if (typeof a[0] === 'number') { a.splice(1, typeof a[1] === 'string' ? 1 : 0, '127.0.0.1'); }
  return listen.apply(this, a);
};
