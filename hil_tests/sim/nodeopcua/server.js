// A simulated OPC UA server on node-opcua: a second, independent stack beside the asyncua simulator.
//
//     node hil_tests/sim/nodeopcua/server.js --port PORT [--vars N] [--types Double,Int32,...] [--period S]
//         [--quiet N] [--min-publishing-interval S] [--min-keepalive-count K] [--operation-limit N]
//         [--decoy-namespaces K] [--user NAME:PASSWORD --security-dir DIR]
//
// Prints "READY <port>" on stdout once listening and exits on SIGTERM or SIGINT; freeze it with
// SIGSTOP. The options mirror hil_tests/sim/opcua_server.py so that one test can run against both.
//
// Nodes, in the namespace urn:gatewayd:sim with string ids: GEN00000 .. (N variables, their data
// types taken in turn from --types) whose value is `index * 1000 + step % 1000`, the step counting
// model periods, so a test can tell from any value which node it came from; QUIET00000 .. (--quiet
// N, value `index * 1000`, never changed). Every value carries the source timestamp of its change.
//
// --decoy-namespaces K registers K namespaces before the simulator's (urn:gatewayd:decoy:0 ..), each
// holding the GEN ids with the value 1e9: a restart with another K renumbers the simulator's namespace.
// --min-publishing-interval and --min-keepalive-count revise subscriptions up to those minimums, as
// plant servers do. --operation-limit sets MaxNodesPerRead and MaxMonitoredItemsPerCall, which
// node-opcua advertises and enforces (BadTooManyOperations). --user admits only that user, over
// Basic256Sha256 only, with the certificate server.der / server.key.pem of --security-dir (made by the
// Python test) and any client certificate accepted.
//
// Runs on Debian 12's Node.js 18 as on newer ones: package.json pins hexy (a node-opcua dependency)
// to 0.3.5, its last CommonJS release, since Node.js 18 cannot require() an ES module.
"use strict";

// stdout carries the READY line alone: node-opcua's own warnings go to stderr with the rest of its log
console.log = console.info = console.warn = console.error;

const crypto = require("crypto");

// Debian 12's Node.js 18 has Web Crypto only as crypto.webcrypto; node-opcua looks for it globally
if (!globalThis.crypto) {
    globalThis.crypto = crypto.webcrypto;
}
const fs = require("fs");
const path = require("path");
const {
    DataType, MessageSecurityMode, VariantArrayType, OPCUACertificateManager, OPCUAServer, SecurityPolicy, StatusCodes, Variant,
} = require("node-opcua");

const NAMESPACE = "urn:gatewayd:sim";
const DECOY = 1e9;
const TYPES = { Double: DataType.Double, Float: DataType.Float, Int32: DataType.Int32, UInt32: DataType.UInt32,
                Int64: DataType.Int64, UInt64: DataType.UInt64 };

function parseArgs(argv) {
    const args = { port: null, host: "127.0.0.1", vars: 10, types: ["Double"], period: 0.5, quiet: 0,
                   minPublishingInterval: 0, minKeepaliveCount: 0, operationLimit: 0, decoyNamespaces: 0,
                   user: null, securityDir: null };
    const names = { "--port": ["port", Number], "--host": ["host", String], "--vars": ["vars", Number],
                    "--types": ["types", (text) => text.split(",")], "--period": ["period", Number],
                    "--quiet": ["quiet", Number], "--min-publishing-interval": ["minPublishingInterval", Number],
                    "--min-keepalive-count": ["minKeepaliveCount", Number],
                    "--operation-limit": ["operationLimit", Number], "--decoy-namespaces": ["decoyNamespaces", Number],
                    "--user": ["user", String], "--security-dir": ["securityDir", String] };
    for (let i = 0; i < argv.length; i += 2) {
        const known = names[argv[i]];
        if (!known || i + 1 >= argv.length) {
            throw new Error(`unknown option or missing value: ${argv[i]}`);
        }
        args[known[0]] = known[1](argv[i + 1]);
    }
    for (const type of args.types) {
        if (!TYPES[type]) {
            throw new Error(`--types: ${type} is not one of ${Object.keys(TYPES).join(", ")}`);
        }
    }
    if (args.port === null || (args.user && !args.securityDir)) {
        throw new Error("--port is required, and --user needs --security-dir");
    }
    return args;
}

function name(prefix, index) {
    return `${prefix}${String(index).padStart(5, "0")}`;
}

function variant(type, value) {
    const dataType = TYPES[type];
    const big = dataType === DataType.Int64 || dataType === DataType.UInt64;
    const scalar = VariantArrayType.Scalar;
    return new Variant({ dataType, arrayType: scalar, value: big ? [Math.floor(value / 2 ** 32), value % 2 ** 32] : value });
}

function addVariables(namespace, folder, prefix, count, types, value) {
    const variables = [];
    for (let index = 0; index < count; index += 1) {
        const type = types[index % types.length];
        const variable = namespace.addVariable({ componentOf: folder, browseName: name(prefix, index),
                                                 nodeId: `s=${name(prefix, index)}`, dataType: type });
        variable.setValueFromSource(variant(type, value(index)), StatusCodes.Good, new Date());
        variables.push([variable, type]);
    }
    return variables;
}

function reviseSubscriptions(engine, args) {
    const create = engine._createSubscriptionOnSession.bind(engine);
    engine._createSubscriptionOnSession = (session, request) => {
        request.requestedPublishingInterval = Math.max(request.requestedPublishingInterval,
                                                       args.minPublishingInterval * 1000);
        request.requestedMaxKeepAliveCount = Math.max(request.requestedMaxKeepAliveCount, args.minKeepaliveCount);
        return create(session, request);
    };
}

function securityOptions(args) {
    if (!args.securityDir) {
        return { securityPolicies: [SecurityPolicy.None], securityModes: [MessageSecurityMode.None],
                 allowAnonymous: true };
    }
    const pem = path.join(args.securityDir, "server.cert.pem");
    const der = fs.readFileSync(path.join(args.securityDir, "server.der"));
    fs.writeFileSync(pem, new crypto.X509Certificate(der).toString());
    const [user, password] = args.user ? [args.user.slice(0, args.user.indexOf(":")),
                                          args.user.slice(args.user.indexOf(":") + 1)] : [null, null];
    return {
        securityPolicies: [SecurityPolicy.Basic256Sha256],
        securityModes: [MessageSecurityMode.Sign, MessageSecurityMode.SignAndEncrypt],
        certificateFile: pem,
        privateKeyFile: path.join(args.securityDir, "server.key.pem"),
        serverCertificateManager: new OPCUACertificateManager({
            rootFolder: path.join(args.securityDir, "node-pki"), automaticallyAcceptUnknownCertificate: true }),
        allowAnonymous: !args.user,
        userManager: { isValidUser: (name, secret) => name === user && secret === password },
    };
}

async function main() {
    const args = parseArgs(process.argv.slice(2));
    const limits = args.operationLimit ? { maxNodesPerRead: args.operationLimit,
                                           maxMonitoredItemsPerCall: args.operationLimit } : {};
    const server = new OPCUAServer({
        port: args.port, hostname: args.host, alternateHostname: [args.host],
        serverInfo: { applicationUri: "urn:gatewayd:sim:nodeopcua", productUri: "urn:gatewayd:sim:nodeopcua" },
        serverCapabilities: { operationLimits: limits },
        ...securityOptions(args),
    });
    await server.initialize();
    reviseSubscriptions(server.engine, args);
    const addressSpace = server.engine.addressSpace;
    const objects = addressSpace.rootFolder.objects;
    for (let decoy = 0; decoy < args.decoyNamespaces; decoy += 1) {
        const namespace = addressSpace.registerNamespace(`urn:gatewayd:decoy:${decoy}`);
        const folder = namespace.addFolder(objects, { browseName: `Decoy${decoy}` });
        addVariables(namespace, folder, "GEN", args.vars, ["Double"], () => DECOY);
    }
    const namespace = addressSpace.registerNamespace(NAMESPACE);
    const folder = namespace.addFolder(objects, { browseName: "Plant" });
    let step = 0;
    const generic = addVariables(namespace, folder, "GEN", args.vars, args.types, (index) => index * 1000);
    addVariables(namespace, folder, "QUIET", args.quiet, args.types, (index) => index * 1000);
    const timer = setInterval(() => {
        step += 1;
        const now = new Date();
        generic.forEach(([variable, type], index) => {
            variable.setValueFromSource(variant(type, index * 1000 + (step % 1000)), StatusCodes.Good, now);
        });
    }, args.period * 1000);
    await server.start();
    process.stdout.write(`READY ${server.endpoints[0].port}\n`);
    const stop = async () => {
        clearInterval(timer);
        await server.shutdown(0);
        process.exit(0);
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
}

main().catch((error) => {
    process.stderr.write(`${error.stack || error}\n`);
    process.exit(1);
});
