// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title IProviderRegistry
/// @notice What the JobMarket needs from the ProviderRegistry.
interface IProviderRegistry {
    /// @notice Whether `provider` may take jobs: registered, staked at least the minimum, not unstaking.
    function isActive(address provider) external view returns (bool);

    /// @notice Removes up to `amount` of `provider`'s stake and sends the reward share to the market;
    /// market only. Never reverts for a provider with nothing left to slash.
    /// @return slashed The stake actually removed.
    /// @return reward The part of it sent to the market, to be credited to whoever proved the fault.
    function slash(address provider, uint256 amount) external returns (uint256 slashed, uint256 reward);

    /// @notice Seconds between a provider's `requestUnstake` and `withdrawStake`.
    function unstakeCooldown() external view returns (uint256);
}
