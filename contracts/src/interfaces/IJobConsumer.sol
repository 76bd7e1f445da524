// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title IJobConsumer
/// @notice Implemented by contracts that request on-chain jobs and want the result delivered to them.
/// @dev The market calls this with a bounded amount of gas and ignores failures: a callback that
/// reverts or runs out of gas is recorded in a `CallbackFailed` event and never blocks payment.
interface IJobConsumer {
    /// @notice Receives a job's result once the provider's signed receipt has been checked.
    /// @param jobId The job.
    /// @param outputHash sha256 of the output, as signed by the provider.
    /// @param output The output bytes; empty when the provider delivered only the hash.
    function onJobResult(bytes32 jobId, bytes32 outputHash, bytes calldata output) external;
}
