/**
 * How knp moves Packets: the `PacketStream` contract, the gRPC adapter over grpc-js, the
 * WebSocket agent link, byte sockets, hot-reloaded TLS material and the agent certificate proof.
 *
 * @module
 */

export * from "./agent_proof.ts";
export * from "./byte_socket.ts";
export * from "./grpc_stream.ts";
export * from "./packet_stream.ts";
export * from "./tls_files.ts";
export * from "./ws_client.ts";
export * from "./ws_stream.ts";
