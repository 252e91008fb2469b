// Initiate the replica set and create its users, idempotently: safe to run again and again.
//
// Run on the first member through the localhost exception (before any user exists), e.g.
//   mongosh --quiet --file deploy/mongo/init-replica-set.js
// Environment: RS_NAME (rs0), RS_MEMBERS ("mongo1:27017,mongo2:27017,mongo3:27017"),
// MONGO_ADMIN_PASSWORD, and FLOODGATE_MONGODB_URI: the application user and its password
// are taken from the URI's credentials, the one place Floodgate keeps them.
const name = process.env.RS_NAME || "rs0";
const members = (process.env.RS_MEMBERS || "mongo1:27017,mongo2:27017,mongo3:27017")
  .split(",")
  .map((host, i) => ({ _id: i, host: host.trim(), priority: i === 0 ? 2 : 1 }));

// mongodb://user:password@host1,host2/... (percent-encoded, as a URI needs).
const credentials = /^mongodb(?:\+srv)?:\/\/([^:@\/]+):([^@\/]+)@/.exec(
  process.env.FLOODGATE_MONGODB_URI || "",
);
if (credentials === null) throw new Error("FLOODGATE_MONGODB_URI names no user:password@");
const appUser = decodeURIComponent(credentials[1]);
const appPassword = decodeURIComponent(credentials[2]);

function status() {
  try {
    return rs.status();
  } catch (error) {
    if (error.codeName === "NotYetInitialized" || error.code === 94) return null;
    throw error;
  }
}

if (status() === null) {
  print(`initiating ${name} with ${members.map((m) => m.host).join(", ")}`);
  rs.initiate({ _id: name, members: members });
} else {
  print(`${name} already initiated`);
}

// Wait (bounded) for a primary: users can only be created there.
for (let i = 0; i < 120 && !db.hello().isWritablePrimary; i++) sleep(1000);
if (!db.hello().isWritablePrimary) throw new Error("no primary after 120 s");

const admin = db.getSiblingDB("admin");
if (admin.getUser("admin") === null) {
  admin.createUser({
    user: "admin",
    pwd: process.env.MONGO_ADMIN_PASSWORD,
    roles: [{ role: "root", db: "admin" }],
  });
  print("created user admin");
}
// From here on the localhost exception is gone: authenticate for the rest.
admin.auth("admin", process.env.MONGO_ADMIN_PASSWORD);
const app = db.getSiblingDB("floodgate");
if (app.getUser(appUser) === null) {
  app.createUser({
    user: appUser,
    pwd: appPassword,
    // readWrite for messages/blocklist; change streams need find + changeStream on them.
    roles: [{ role: "readWrite", db: "floodgate" }],
  });
  print(`created user ${appUser}`);
}
print("replica set ready");
