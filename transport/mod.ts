/**
 * How knp moves Packets: the `PacketStream` contract, the gRPC adapter over grpc-js, the
 * WebSocket agent link, byte sockets, hot-reloaded TLS material and the agent certificate proof.
 *
 * @module
 */

export * from "./agent_proof.ts";
export * from "./byte_socket.ts";
export * from "./cert_validity.ts";
export * from "./client_websocket.ts";
export * from "./grpc_channel.ts";
export * from "./grpc_server.ts";
export * from "./grpc_stream.ts";
export * from "./keepalive.ts";
export * from "./packet_stream.ts";
export * from "./server_websocket.ts";
export * from "./tls_files.ts";
export * from "./tls_listener.ts";
export * from "./tls_policy.ts";
export * from "./ws_accept.ts";
export * from "./ws_client.ts";
export * from "./ws_events.ts";
export * from "./ws_frame.ts";
export * from "./ws_handshake.ts";
export * from "./ws_stream.ts";
