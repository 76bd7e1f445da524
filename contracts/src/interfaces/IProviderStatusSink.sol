// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title IProviderStatusSink
/// @notice Implemented by the JobMarket: the ProviderRegistry pushes every change of a provider's
/// active status here, so claiming a job costs no call to the registry.
interface IProviderStatusSink {
    /// @notice Records whether `provider` is active; callable only by the registry.
    function setProviderActive(address provider, bool active) external;
}
